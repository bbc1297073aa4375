"""Vault media encryption: streaming AEAD vs one-shot AES-GCM, seek cost, memory on 2 GB.

    .venv/bin/python bench/vault.py [--mb 256] [--rounds 5] [--size-gb 2] [--quick]

1. Throughput: the same `--mb` random bytes are encrypted and decrypted by reelhouse's streaming
   AEAD (`core.security.streaming`, 1 MiB segments, fed in 1 MiB chunks as an upload arrives)
   and by one AES-256-GCM call over the whole buffer (the fastest the library can go, and not
   usable for media: no seeking, whole object in memory). Rounds alternate; medians and their
   ratio are printed. Target: streaming >= 0.8x one-shot.
2. Seeking: a `--size-gb` object is encrypted into the filesystem storage backend, then the
   first and the last 1 MB are read through `decrypt_range` over `storage.get` ranges, 30 times
   each. Target: last / first <= 2 (a read costs the same wherever it lands).
3. Memory: a child process encrypts a `--size-gb` upload stream into storage (what the upload
   route does with a request body) and reports its peak RSS; a second child stores the same
   stream without encryption as the baseline. Target: < 100 MB.
The markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from reelhouse.core.security.streaming import StreamingAead, new_data_key  # noqa: E402
from reelhouse.core.storage.fs import FsStorage  # noqa: E402

MB = 1024 * 1024
AAD = b"vault/message/bench/media"
THROUGHPUT_TARGET = 0.8
SEEK_TARGET = 2.0
RSS_TARGET = 100 * MB


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def chunks_of(data: memoryview, size: int = MB) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def synthetic_upload(total: int, chunk: int = MB) -> AsyncIterator[bytes]:
    """`total` bytes in upload-sized chunks; one random block reused, so generating 2 GB costs nothing."""
    block = os.urandom(16 * MB)
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        offset = sent % len(block)
        piece = block[offset : offset + size]
        if len(piece) < size:
            piece += block[: size - len(piece)]
        sent += size
        yield piece


async def time_streaming(aead: StreamingAead, data: bytes) -> tuple[float, float, bytes]:
    started = time.perf_counter()
    parts = [part async for part in aead.encrypt_stream(chunks_of(memoryview(data)), AAD)]
    encrypt = time.perf_counter() - started
    sealed = b"".join(parts)
    del parts

    async def reader(start: int, end: int) -> AsyncIterator[bytes]:
        view = memoryview(sealed)[start : end + 1]
        for offset in range(0, len(view), MB):
            yield view[offset : offset + MB]

    started = time.perf_counter()
    total = 0
    async for plain in aead.decrypt_range(reader, len(sealed), AAD):
        total += len(plain)
    decrypt = time.perf_counter() - started
    assert total == len(data)
    return encrypt, decrypt, sealed


def time_one_shot(key: bytes, data: bytes) -> tuple[float, float]:
    cipher, nonce = AESGCM(key), os.urandom(12)
    started = time.perf_counter()
    sealed = cipher.encrypt(nonce, data, AAD)
    encrypt = time.perf_counter() - started
    started = time.perf_counter()
    plain = cipher.decrypt(nonce, sealed, AAD)
    decrypt = time.perf_counter() - started
    assert len(plain) == len(data)
    return encrypt, decrypt


async def throughput(mb: int, rounds: int) -> list[str]:
    data = os.urandom(mb * MB)
    key = new_data_key()
    aead = StreamingAead(key)
    results: dict[str, list[float]] = {"stream_enc": [], "stream_dec": [], "shot_enc": [], "shot_dec": []}
    for round_no in range(rounds):
        if round_no % 2 == 0:
            enc, dec, _ = await time_streaming(aead, data)
            shot_enc, shot_dec = time_one_shot(key, data)
        else:
            shot_enc, shot_dec = time_one_shot(key, data)
            enc, dec, _ = await time_streaming(aead, data)
        results["stream_enc"].append(enc)
        results["stream_dec"].append(dec)
        results["shot_enc"].append(shot_enc)
        results["shot_dec"].append(shot_dec)
        log(
            f"round {round_no + 1}: stream enc {enc:.3f}s dec {dec:.3f}s; "
            f"one-shot enc {shot_enc:.3f}s dec {shot_dec:.3f}s"
        )
    med = {name: statistics.median(values) for name, values in results.items()}
    rate = lambda seconds: f"{mb / seconds:,.0f} MB/s"  # noqa: E731
    enc_ratio, dec_ratio = med["shot_enc"] / med["stream_enc"], med["shot_dec"] / med["stream_dec"]
    return [
        f"| {mb} MiB, median of {rounds} | encrypt | decrypt |",
        "|---|---|---|",
        f"| one-shot AES-256-GCM (one call over the buffer) | {rate(med['shot_enc'])} | {rate(med['shot_dec'])} |",
        f"| streaming AEAD, 1 MiB segments, 1 MiB chunks | {rate(med['stream_enc'])} | {rate(med['stream_dec'])} |",
        f"| streaming / one-shot (target >= {THROUGHPUT_TARGET}) | **{enc_ratio:.2f}** | **{dec_ratio:.2f}** |",
    ]


async def seeking(size: int, repeats: int, root: Path) -> list[str]:
    storage = FsStorage(root / "seek")
    aead = StreamingAead(new_data_key())
    key = "vault/bench/object.rhs"
    log(f"encrypting a {size / MB / 1024:.1f} GiB object into storage ...")
    started = time.perf_counter()
    info = await storage.put(key, aead.encrypt_stream(synthetic_upload(size), AAD))
    log(f"  stored {info.size} bytes in {time.perf_counter() - started:.1f}s")

    async def read(start: int) -> float:
        began = time.perf_counter()
        got = 0
        async for plain in aead.decrypt_range(
            lambda s, e: storage.get(key, (s, e)), info.size, AAD, start, start + MB - 1
        ):
            got += len(plain)
        assert got == MB
        return time.perf_counter() - began

    first, last = [], []
    for i in range(repeats):
        if i % 2 == 0:
            first.append(await read(0))
            last.append(await read(size - MB))
        else:
            last.append(await read(size - MB))
            first.append(await read(0))
    await storage.delete(key)
    f, la = statistics.median(first), statistics.median(last)
    return [
        f"| {size / MB / 1024:.1f} GiB encrypted object, median of {repeats} | time |",
        "|---|---|",
        f"| first 1 MB | {f * 1000:.2f} ms |",
        f"| last 1 MB | {la * 1000:.2f} ms |",
        f"| last / first (target <= {SEEK_TARGET}) | **{la / f:.2f}** |",
    ]


async def rss_child(mode: str, size: int, root: str) -> None:
    storage = FsStorage(root)
    source = synthetic_upload(size)
    if mode == "encrypt":
        source = StreamingAead(new_data_key()).encrypt_stream(source, AAD)
    await storage.put("vault/bench/upload.rhs", source)
    await storage.delete("vault/bench/upload.rhs")
    print(high_water_rss())


def high_water_rss() -> int:
    """Peak RSS of this process image. Not ru_maxrss: Linux carries that over from the parent
    across fork + exec, so a child would report the (larger) benchmark parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss(mode: str, size: int, root: Path) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", mode, "--size-gb", str(size / (1024 * MB)), "--root", str(root)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def memory(size: int, root: Path) -> list[str]:
    log("peak RSS: plain store (baseline) ...")
    plain = peak_rss("plain", size, root / "rss")
    log("peak RSS: encrypted store ...")
    encrypted = peak_rss("encrypt", size, root / "rss")
    return [
        f"| {size / MB / 1024:.1f} GiB upload stream into storage | peak RSS |",
        "|---|---|",
        f"| stored as is (baseline: interpreter + storage backend) | {plain / MB:.0f} MB |",
        f"| encrypted as it streams (vault upload path) | {encrypted / MB:.0f} MB (target < {RSS_TARGET // MB} MB) |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--rss-child", choices=["plain", "encrypt"])
    parser.add_argument("--root")
    args = parser.parse_args()
    size = int(args.size_gb * 1024 * MB)
    if args.rss_child:
        asyncio.run(rss_child(args.rss_child, size, args.root))
        return
    if args.quick:
        args.mb, args.rounds, size = 32, 3, 64 * MB
    with tempfile.TemporaryDirectory(prefix="rh-bench-vault-", dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        report = ["### Throughput: streaming AEAD vs one-shot AES-GCM", ""]
        report += asyncio.run(throughput(args.mb, args.rounds))
        report += ["", "### Seeking: last 1 MB vs first 1 MB of a large encrypted object", ""]
        report += asyncio.run(seeking(size, 30, root))
        report += ["", "### Memory while encrypting an upload", ""]
        report += memory(size, root)
    print("\n".join(report))


if __name__ == "__main__":
    main()

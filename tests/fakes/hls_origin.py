"""A real HLS origin on loopback for yt-dlp: ffmpeg-generated VOD playlists served over HTTP.

    origin = HlsOrigin()
    origin.add_vod("1001", generate_hls(tmp / "clip", duration=6))
    with serve(origin) as served:            # tests.fakes.server
        url = f"{served.base_url}/videos/1001/index.m3u8"

yt-dlp fetches it with its generic HLS extractor, exactly as it fetches any HLS VOD. Faults and
measurements the archive tests need:
- a per-connection rate cap (token bucket per TCP connection), so a transfer is slow enough to
  be interrupted, and so parallel fragment downloads are faster than sequential ones;
- deleted VODs answer 404, like Twitch for a removed archive;
- every body byte handed to a connection is counted per VOD, and a byte counted is a byte the
  client asked for: resume efficiency is measured at the origin, not trusted from the client;
- `Range` requests (yt-dlp resumes a half-fetched fragment with one);
- when a VOD's transfer started and ended, measured at the origin (`transfer_stats`, or
  `GET /stats/{id}` from another process), so a benchmark can time the transfer alone.

`add_synthetic_vod` builds a VOD of any size from one short fMP4 encode: segment k is a copy of
one real segment whose `tfdt` (decode time) and `mfhd` (sequence number) are rewritten, so the
timeline is continuous and a 2 GB VOD costs seconds of encoding and no 2 GB on disk.
Run as a script (`python -m tests.fakes.hls_origin --synthetic ID:BYTES`) it serves from its own
process, which keeps the origin's memory and CPU out of a benchmark's measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_SEND_PIECE = 64 * 1024


def generate_hls(
    out_dir: Path,
    *,
    duration: float = 6,
    segment_seconds: int = 2,
    size: str = "320x180",
    fps: int = 15,
    video_bitrate: str | None = None,
    segment_type: str = "mpegts",
) -> Path:
    """Encode testsrc2 + a sine tone into a VOD playlist `out_dir/index.m3u8` with segments.

    `video_bitrate` pins the bitrate with CBR filler, so a test can ask for a file of a known
    size; without it the clip is as small as x264 makes it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rate = []
    if video_bitrate:
        rate = [
            "-b:v",
            video_bitrate,
            "-minrate",
            video_bitrate,
            "-maxrate",
            video_bitrate,
            "-bufsize",
            video_bitrate,
            "-x264-params",
            "nal-hrd=cbr",
        ]
    ext = "m4s" if segment_type == "fmp4" else "ts"
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={fps}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        str(duration),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(fps * segment_seconds),
        "-keyint_min",
        str(fps * segment_seconds),
        "-sc_threshold",
        "0",
        *rate,
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "hls",
        "-hls_time",
        str(segment_seconds),
        "-hls_playlist_type",
        "vod",
        "-hls_segment_type",
        segment_type,
        "-hls_segment_filename",
        str(out_dir / f"seg_%04d.{ext}"),
    ]
    if segment_type == "fmp4":
        cmd += ["-hls_fmp4_init_filename", "init.mp4"]
    subprocess.run([*cmd, str(out_dir / "index.m3u8")], check=True)
    return out_dir


# ---- fMP4 box patching for synthetic VODs ------------------------------------------------------


def _boxes(data: bytes, start: int, end: int):
    """(type, offset of the box, offset of its payload, end) of each box in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        yield kind.decode("latin-1"), pos, pos + header, pos + size
        pos += size


def _fragment_fields(segment: bytes) -> tuple[int, list[tuple[int, int, int]]]:
    """Offset of mfhd's sequence number, and (offset, width, value) of every traf's tfdt time."""
    mfhd_at, times = -1, []
    for kind, _box, payload, end in _boxes(segment, 0, len(segment)):
        if kind != "moof":
            continue
        for inner, _b, inner_payload, inner_end in _boxes(segment, payload, end):
            if inner == "mfhd":
                mfhd_at = inner_payload + 4
            elif inner == "traf":
                for leaf, _l, leaf_payload, _e in _boxes(segment, inner_payload, inner_end):
                    if leaf == "tfdt":
                        wide = segment[leaf_payload] == 1
                        fmt = ">Q" if wide else ">I"
                        at = leaf_payload + 4
                        times.append((at, 8 if wide else 4, struct.unpack_from(fmt, segment, at)[0]))
    if mfhd_at < 0 or not times:
        raise ValueError("not an fMP4 media segment (no moof/mfhd/tfdt)")
    return mfhd_at, times


@dataclass
class SyntheticSource:
    """One encoded fMP4 segment plus the per-track decode-time step between two segments."""

    init: bytes
    segment: bytes
    seconds: float
    mfhd_at: int
    times: list[tuple[int, int, int]]  # (offset, width, first value)
    steps: list[int]

    @classmethod
    def encode(
        cls, work_dir: Path, *, size: str = "1280x720", bitrate: str = "8M", seconds: int = 2
    ) -> SyntheticSource:
        generate_hls(
            work_dir,
            duration=seconds * 3,
            segment_seconds=seconds,
            size=size,
            fps=30,
            video_bitrate=bitrate,
            segment_type="fmp4",
        )
        first, second = (work_dir / "seg_0000.m4s").read_bytes(), (work_dir / "seg_0001.m4s").read_bytes()
        mfhd_at, times = _fragment_fields(first)
        _, later = _fragment_fields(second)
        steps = [b[2] - a[2] for a, b in zip(times, later, strict=True)]
        return cls((work_dir / "init.mp4").read_bytes(), first, float(seconds), mfhd_at, times, steps)

    def copy(self, index: int) -> bytes:
        data = bytearray(self.segment)
        struct.pack_into(">I", data, self.mfhd_at, index + 1)
        for (at, width, first), step in zip(self.times, self.steps, strict=True):
            struct.pack_into(">Q" if width == 8 else ">I", data, at, first + index * step)
        return bytes(data)


# ---- the origin ------------------------------------------------------------------------------------


@dataclass
class _Vod:
    files: dict[str, Path] = field(default_factory=dict)  # name -> file on disk
    synthetic: SyntheticSource | None = None
    segments: int = 0
    deleted: bool = False

    def _segment_index(self, name: str) -> int | None:
        match = re.fullmatch(r"seg_(\d+)\.m4s", name)
        if match and int(match.group(1)) < self.segments:
            return int(match.group(1))
        return None

    def body(self, name: str) -> bytes | None:
        if self.synthetic is None:
            path = self.files.get(name)
            return path.read_bytes() if path else None
        if name == "init.mp4":
            return self.synthetic.init
        if name == "index.m3u8":
            seconds = self.synthetic.seconds
            lines = [
                "#EXTM3U",
                "#EXT-X-VERSION:7",
                f"#EXT-X-TARGETDURATION:{int(seconds)}",
                "#EXT-X-MEDIA-SEQUENCE:0",
                "#EXT-X-PLAYLIST-TYPE:VOD",
                '#EXT-X-MAP:URI="init.mp4"',
            ]
            for i in range(self.segments):
                lines += [f"#EXTINF:{seconds:.3f},", f"seg_{i:06d}.m4s"]
            return ("\n".join([*lines, "#EXT-X-ENDLIST", ""])).encode()
        index = self._segment_index(name)
        return self.synthetic.copy(index) if index is not None else None


class _Bucket:
    """Token bucket for one connection: `rate` bytes/s with a burst of one send piece."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.allowance = float(_SEND_PIECE)
        self.stamp = time.monotonic()

    async def take(self, n: int) -> None:
        while True:
            now = time.monotonic()
            self.allowance = min(float(_SEND_PIECE), self.allowance + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.allowance >= n:
                self.allowance -= n
                return
            await asyncio.sleep((n - self.allowance) / self.rate)


class HlsOrigin:
    """ASGI app serving `/videos/{id}/{file}`; thread-safe counters for the test to read."""

    def __init__(self, *, rate_per_connection: float | None = None) -> None:
        self.rate_per_connection = rate_per_connection
        self.requests: list[tuple[str, str, int]] = []  # (vod id, file, status)
        self._vods: dict[str, _Vod] = {}
        self._sent: dict[str, int] = {}
        self._first_request: dict[str, float] = {}
        self._last_byte: dict[str, float] = {}
        self._buckets: dict[Any, _Bucket] = {}
        self._lock = threading.Lock()

    # -- configuration -----------------------------------------------------------------------------
    def add_vod(self, vod_id: str, directory: Path) -> None:
        """Serve an ffmpeg HLS directory (index.m3u8 + segments) as VOD `vod_id`."""
        files = {p.name: p for p in directory.iterdir() if p.is_file()}
        if "index.m3u8" not in files:
            raise ValueError(f"{directory} has no index.m3u8")
        with self._lock:
            self._vods[vod_id] = _Vod(files=files)

    def add_synthetic_vod(self, vod_id: str, source: SyntheticSource, total_bytes: int) -> int:
        """A VOD of about `total_bytes` made of rewritten copies of `source`; returns its segment count."""
        segments = max(1, -(-total_bytes // len(source.segment)))
        with self._lock:
            self._vods[vod_id] = _Vod(synthetic=source, segments=segments)
        return segments

    def delete_vod(self, vod_id: str) -> None:
        with self._lock:
            self._vods.setdefault(vod_id, _Vod()).deleted = True

    # -- measurements --------------------------------------------------------------------------
    def bytes_sent(self, vod_id: str) -> int:
        with self._lock:
            return self._sent.get(vod_id, 0)

    def transfer_stats(self, vod_id: str) -> dict[str, float]:
        """Bytes sent, and seconds from the VOD's first request to its last body byte."""
        with self._lock:
            first, last = self._first_request.get(vod_id), self._last_byte.get(vod_id)
            sent = self._sent.get(vod_id, 0)
        seconds = last - first if first is not None and last is not None else 0.0
        return {"bytes_sent": sent, "seconds": seconds}

    def vod_size(self, vod_id: str) -> int:
        """Bytes a single complete fetch of the VOD costs: playlist, init and every segment."""
        with self._lock:
            vod = self._vods[vod_id]
        if vod.synthetic is not None:
            return (
                len(vod.body("index.m3u8") or b"") + len(vod.synthetic.init) + vod.segments * len(vod.synthetic.segment)
            )
        return sum(path.stat().st_size for path in vod.files.values())

    def media_bytes(self, vod_id: str) -> int:
        """Segment bytes only (what ends up in the downloaded file, before remuxing)."""
        return self.vod_size(vod_id) - len(self._lookup(vod_id).body("index.m3u8") or b"")

    def _lookup(self, vod_id: str) -> _Vod:
        with self._lock:
            return self._vods[vod_id]

    # -- ASGI --------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        stats = re.fullmatch(r"/stats/([^/]+)", scope["path"])
        if stats:
            body = json.dumps(self.transfer_stats(stats.group(1))).encode()
            await self._plain(send, 200, body)
            return
        match = re.fullmatch(r"/videos/([^/]+)/([^/]+)", scope["path"])
        vod = None
        if match:
            with self._lock:
                vod = self._vods.get(match.group(1))
        if match is None or vod is None or vod.deleted or scope["method"] not in ("GET", "HEAD"):
            await self._plain(send, 404, b"Not Found")
            self._log(match.group(1) if match else "", match.group(2) if match else scope["path"], 404)
            return
        vod_id, name = match.groups()
        with self._lock:
            self._first_request.setdefault(vod_id, time.monotonic())
        body = vod.body(name)
        if body is None:
            await self._plain(send, 404, b"Not Found")
            self._log(vod_id, name, 404)
            return
        headers = dict(scope["headers"])
        status, start, end = 200, 0, len(body)
        requested = _RANGE.fullmatch(headers.get(b"range", b"").decode())
        if requested:
            start = int(requested.group(1))
            end = min(len(body), int(requested.group(2)) + 1) if requested.group(2) else len(body)
            if start >= len(body):
                await self._plain(send, 416, b"", [(b"content-range", f"bytes */{len(body)}".encode())])
                self._log(vod_id, name, 416)
                return
            status = 206
        content_type = (
            b"application/vnd.apple.mpegurl"
            if name.endswith(".m3u8")
            else (b"video/mp2t" if name.endswith(".ts") else b"video/mp4")
        )
        response_headers = [
            (b"content-type", content_type),
            (b"content-length", str(end - start).encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if status == 206:
            response_headers.append((b"content-range", f"bytes {start}-{end - 1}/{len(body)}".encode()))
        self._log(vod_id, name, status)
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        await self._send_body(scope, receive, send, vod_id, memoryview(body)[start:end])

    async def _send_body(self, scope: dict[str, Any], receive: Any, send: Any, vod_id: str, body: memoryview) -> None:
        disconnected = asyncio.Event()

        async def watch() -> None:
            # After the (empty) request body, receive() returns only at disconnect.
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        bucket = None
        if self.rate_per_connection:
            key = tuple(scope.get("client") or ())
            with self._lock:
                bucket = self._buckets.get(key)
                if bucket is None or bucket.rate != self.rate_per_connection:
                    bucket = self._buckets[key] = _Bucket(self.rate_per_connection)
        try:
            for offset in range(0, len(body), _SEND_PIECE):
                piece = body[offset : offset + _SEND_PIECE]
                if bucket is not None:
                    await bucket.take(len(piece))
                if disconnected.is_set():
                    return
                last = offset + _SEND_PIECE >= len(body)
                await send({"type": "http.response.body", "body": bytes(piece), "more_body": not last})
                with self._lock:
                    self._sent[vod_id] = self._sent.get(vod_id, 0) + len(piece)
                    self._last_byte[vod_id] = time.monotonic()
            if not body:
                await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()

    @staticmethod
    async def _plain(send: Any, status: int, body: bytes, extra: list | None = None) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode()),
                    *(extra or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _log(self, vod_id: str, name: str, status: int) -> None:
        with self._lock:
            self.requests.append((vod_id, name, status))


def _main() -> None:
    import tempfile

    from tests.fakes.server import start_app

    parser = argparse.ArgumentParser(description="Serve synthetic HLS VODs on 127.0.0.1")
    parser.add_argument("--synthetic", action="append", default=[], metavar="ID:BYTES")
    parser.add_argument("--rate", type=float, default=None, help="bytes/s per connection")
    parser.add_argument("--segment-bitrate", default="8M")
    args = parser.parse_args()
    origin = HlsOrigin(rate_per_connection=args.rate)
    with tempfile.TemporaryDirectory(prefix="hls-origin-") as work:
        source = SyntheticSource.encode(Path(work), bitrate=args.segment_bitrate)
        for item in args.synthetic:
            vod_id, _, size = item.partition(":")
            origin.add_synthetic_vod(vod_id, source, int(float(size)))
        served = start_app(origin)
        print(f"{served.base_url} segment_bytes={len(source.segment)}", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
        served.stop()


if __name__ == "__main__":
    # Blocked before the server thread starts, so only sigwait() sees them: a clean stop.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    _main()

"""The yt-dlp process: `python -P run_yt_dlp.py WORKER_PID [--aria2c PATH] -- YT_DLP_ARGS...`.

Started by path from runner.py and never imported by reelhouse, so it loads nothing of
reelhouse (it lives inside every download's memory budget). It
1. dies with the worker: PR_SET_PDEATHSIG(SIGKILL), and gives up at once if the worker already
   died between fork and prctl;
2. with `--aria2c`, lets aria2c fetch HLS fragments (`Aria2cHlsFD`, below);
3. runs yt-dlp's own `main()`.

Why our own aria2c fragment downloader: yt-dlp 2026.06.09 removed aria2c's HLS/DASH support
(advisory GHSA-vx4q-3cr2-7cg2): it wrote fragment URLs from the manifest into aria2c's input
file as they came, so a crafted manifest could add lines, and with them aria2c options, to it.
Here every URL goes through `aria2c_uri` (aria2c.py) before it is written, torrents and
metalinks are never followed, file names are ours and every other option is argv. yt-dlp still
parses the manifest, decrypts AES-128 and post-processes; aria2c only moves bytes, with one
connection per fragment and up to N fragments at once, in C instead of N Python threads.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 75
DOWNLOADER_PREFIX = "[reelhouse-downloader] "  # output.py reads it
PROGRESS_INTERVAL = 0.5


def die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the process that started us dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def load_aria2c_helpers() -> ModuleType:
    """aria2c.py next to this file, by path (importing it by name would import reelhouse)."""
    spec = importlib.util.spec_from_file_location("reelhouse_ytdlp_aria2c", Path(__file__).with_name("aria2c.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install_aria2c_hls(aria2c: str) -> str | None:
    """Register `Aria2cHlsFD` with yt-dlp; its downloader name, or None when this yt-dlp's
    internals are not what it was written against (then yt-dlp's own downloader runs)."""
    try:
        from yt_dlp.downloader import external
        from yt_dlp.downloader.external import ExternalFD
    except ImportError:
        return None
    registry = getattr(external, "_BY_NAME", None)
    needed = ("decrypter", "_hook_progress", "_prepare_multiline_status", "_write_cookies", "temp_name")
    if not isinstance(registry, dict) or not all(hasattr(ExternalFD, name) for name in needed):
        return None
    helpers = load_aria2c_helpers()

    class Aria2cHlsFD(ExternalFD):
        SUPPORTED_PROTOCOLS = ("m3u8_frag_urls",)
        EXE_NAME = aria2c

        @classmethod
        def available(cls, path: Any = None) -> str:
            cls.exe = aria2c
            return aria2c

        @staticmethod
        def supports_manifest(manifest: str) -> bool:
            return bool(helpers.manifest_is_safe_for_aria2c(manifest))

        def _call_downloader(self, tmpfilename: str, info_dict: dict[str, Any]) -> int:
            return _download_fragments(self, helpers, tmpfilename, info_dict)

    registry[Aria2cHlsFD.get_basename()] = Aria2cHlsFD
    return str(Aria2cHlsFD.get_basename())


def _aria2c_command(fd: Any, directory: Path, info_dict: dict[str, Any]) -> list[str]:
    params = fd.params
    timeout = str(max(1, int(params.get("socket_timeout") or 30)))
    retries = params.get("fragment_retries")
    tries = 0 if retries == float("inf") else int(retries if retries is not None else 10) + 1
    cmd = [
        fd.exe,
        "--no-conf",
        "--input-file=-",
        f"--dir={directory}{os.sep}",
        f"--max-concurrent-downloads={max(1, int(params.get('concurrent_fragment_downloads') or 1))}",
        "--split=1",
        "--max-connection-per-server=1",
        "--continue=true",
        "--allow-overwrite=false",
        "--auto-file-renaming=false",
        "--file-allocation=none",
        "--disk-cache=0",  # written as received: what a kill loses is only what was in flight
        "--auto-save-interval=1",  # control files at most a second behind the data
        "--follow-torrent=false",
        "--follow-metalink=false",
        "--remote-time=false",
        f"--max-tries={tries}",
        "--retry-wait=1",
        f"--timeout={timeout}",
        f"--connect-timeout={timeout}",
        f"--stop-with-process={os.getpid()}",
        "--console-log-level=warn",
        "--enable-color=false",
        "--summary-interval=0",
        "--download-result=hide",
        "--show-console-readout=false",
        f"--load-cookies={fd._write_cookies()}",
    ]
    if params.get("ratelimit"):
        cmd.append(f"--max-overall-download-limit={int(params['ratelimit'])}")
    if params.get("proxy"):
        cmd.append(f"--all-proxy={params['proxy']}")
    if params.get("nocheckcertificate"):
        cmd.append("--check-certificate=false")
    for key, value in (info_dict.get("http_headers") or {}).items():
        if key.lower() == "user-agent":
            cmd.append(f"--user-agent={value}")  # else aria2c sends its own next to ours
        else:
            cmd.append(f"--header={key}: {value}")
    return cmd


def _download_fragments(fd: Any, helpers: ModuleType, tmpfilename: str, info_dict: dict[str, Any]) -> int:
    fragments = info_dict["fragments"]
    try:
        uris = [helpers.aria2c_uri(fragment["url"]) for fragment in fragments]
    except ValueError as exc:
        fd.report_error(str(exc))
        return 1
    if any(fragment.get("byte_range") for fragment in fragments):
        fd.report_error("byte-range fragments cannot be fetched with aria2c")
        return 1
    if any(ord(c) < 0x20 or c == "\x7f" for c in Path(tmpfilename).name):
        fd.report_error("the output file name cannot be handed to aria2c")
        return 1
    files = helpers.FragmentFiles(tmpfilename, [int(fragment["frag_index"]) for fragment in fragments])
    files.prepare()
    decrypt = fd.decrypter(info_dict)
    encrypted = any((f.get("decrypt_info") or {}).get("METHOD") == "AES-128" for f in fragments)

    def append_ready() -> None:
        files.append_ready((lambda position, data: decrypt(fragments[position], data)) if encrypted else None)

    append_ready()
    todo = files.pending()
    print(f"{DOWNLOADER_PREFIX}aria2c {len(todo)} of {len(fragments)} fragments", flush=True)
    fd._prepare_multiline_status()
    if todo:
        by_index = dict(zip(files.indices, uris, strict=True))
        listing = "".join(f"{by_index[i]}\n  out={files.writing(i).name}\n" for i in todo).encode()
        command = _aria2c_command(fd, Path(tmpfilename).parent, info_dict)
        returncode = _run_aria2c(fd, command, listing, files, append_ready, tmpfilename, info_dict)
        files.collect(running=False)
        append_ready()
        if returncode != 0:
            fd.report_error(f"aria2c exited with status {returncode}; {len(files.pending())} fragment(s) missing")
            return returncode
    if not files.complete():
        fd.report_error(f"aria2c finished but fragment(s) {files.pending()[:5]} are missing")
        return 1
    files.finish()
    return 0


def _run_aria2c(
    fd: Any,
    cmd: list[str],
    listing: bytes,
    files: Any,
    append_ready: Any,
    tmpfilename: str,
    info_dict: dict[str, Any],
) -> int:
    """Run aria2c over `listing` (its input file, on stdin); meanwhile append finished fragments
    and report progress through yt-dlp's own hook (so the template and size bound hold)."""
    fd._debug_cmd(cmd)
    process = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=sys.stderr.fileno(), stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )
    try:
        assert process.stdin is not None
        try:
            process.stdin.write(listing)  # aria2c reads the whole list at start-up
            process.stdin.close()
        except BrokenPipeError:
            pass  # aria2c exited at once; its status and message follow
        started = last_time = time.monotonic()
        last_bytes, speed = files.bytes_on_disk()[0], None
        while True:
            try:
                returncode = process.wait(timeout=PROGRESS_INTERVAL)
            except subprocess.TimeoutExpired:
                returncode = None
            files.collect(running=returncode is None)
            append_ready()
            held, finished = files.bytes_on_disk()
            now = time.monotonic()
            if now > last_time:
                current = (held - last_bytes) / (now - last_time)
                speed = current if speed is None else 0.7 * speed + 0.3 * current
            last_time, last_bytes = now, held
            count, total = files.finished_count(), len(files.indices)
            estimate = int(finished / count * total) if count else None
            fd._hook_progress(
                {
                    "status": "downloading",
                    "downloaded_bytes": held,
                    "total_bytes_estimate": max(estimate, held) if estimate else None,
                    "elapsed": now - started,
                    "speed": speed,
                    "eta": (estimate - held) / speed if estimate and speed and estimate > held else None,
                    "fragment_index": count,
                    "fragment_count": total,
                    "tmpfilename": tmpfilename,
                    "filename": info_dict.get("_filename"),
                },
                info_dict,
            )
            if returncode is not None:
                return returncode
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def main(argv: list[str]) -> None:
    worker_pid, rest = int(argv[0]), argv[1:]
    die_with_parent()
    if os.getppid() != worker_pid:
        os._exit(EXIT_ORPHANED)  # the worker died before prctl took effect
    aria2c = None
    if rest[:1] == ["--aria2c"]:
        aria2c, rest = rest[1], rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if aria2c:
        name = install_aria2c_hls(aria2c)
        if name:
            rest = ["--downloader", f"m3u8:{name}", *rest]  # first, so YTDLP_ARGS can override it
        else:
            print("WARNING: [reelhouse] this yt-dlp cannot take an aria2c fragment downloader", file=sys.stderr)
    import yt_dlp

    sys.argv = ["yt-dlp", *rest]
    yt_dlp.main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Test media generated on the spot with ffmpeg's lavfi sources (testsrc2 picture, sine tone).

Nothing binary is checked in: each helper writes a small clip and returns its path. Encodes
use the ultrafast preset so a whole test session spends seconds, not minutes, making media.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import psutil

FFMPEG = os.environ.get("FFMPEG_PATH", "ffmpeg")
FFPROBE = os.environ.get("FFPROBE_PATH", "ffprobe")


def _ffmpeg(*args: str) -> None:
    completed = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"fixture generation failed: {completed.stderr.strip()}")


def _picture(width: int, height: int, fps: float, duration: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={duration}"]


def _tone(duration: float, sample_rate: int = 48_000, frequency: int = 440) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate={sample_rate}:duration={duration}"]


def make_clip(
    path: Path,
    *,
    width: int = 320,
    height: int = 240,
    duration: float = 2.0,
    fps: float = 30,
    audio: bool = True,
    audio_channels: int = 2,
    preset: str = "ultrafast",
    faststart: bool = True,
) -> Path:
    """H.264 (+ AAC) MP4 of the testsrc2 pattern."""
    args = _picture(width, height, fps, duration)
    if audio:
        args += _tone(duration)
    args += ["-map", "0:v"]
    if audio:
        args += ["-map", "1:a", "-c:a", "aac", "-b:a", "96k", "-ac", str(audio_channels)]
    args += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-g", str(round(fps))]
    if faststart:
        args += ["-movflags", "+faststart"]
    _ffmpeg(*args, str(path))
    return path


def make_vfr_clip(path: Path) -> Path:
    """Two seconds: one at 30 fps then one at 10 fps, muxed with their real timestamps."""
    _ffmpeg(
        *_picture(320, 240, 30, 1),
        *_picture(320, 240, 10, 1),
        "-filter_complex",
        "[0:v][1:v]concat=n=2:v=1:a=0[v]",
        "-map",
        "[v]",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(path),
    )
    return path


def make_rotated_clip(path: Path, *, rotation: int = 90, width: int = 320, height: int = 240) -> Path:
    """A phone-style clip: the picture stored landscape, a display matrix saying 'turn it'."""
    plain = path.with_name(f"{path.stem}.unrotated.mp4")
    make_clip(plain, width=width, height=height, duration=1.0)
    try:
        # ffmpeg >= 6 sets the display matrix with an input option...
        _ffmpeg("-display_rotation", str(rotation), "-i", str(plain), "-c", "copy", str(path))
    except RuntimeError:
        # ...ffmpeg 5.x (Debian 12) through the `rotate` tag the MP4 muxer translates.
        _ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={rotation}", str(path))
    plain.unlink()
    return path


def make_audio_only_clip(path: Path, *, duration: float = 2.0, sample_rate: int = 44_100) -> Path:
    _ffmpeg(*_tone(duration, sample_rate), "-c:a", "aac", "-b:a", "96k", str(path))
    return path


def make_truncated_mp4(path: Path) -> Path:
    """An MP4 cut in half with its index (moov) at the end, as an interrupted download leaves it."""
    whole = path.with_name(f"{path.stem}.whole.mp4")
    make_clip(whole, duration=2.0, faststart=False)
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    whole.unlink()
    return path


def make_partial_mp4(path: Path) -> Path:
    """An MP4 whose index survived (moov first) but whose media data stops halfway: it probes
    fine and fails only when decoded."""
    whole = path.with_name(f"{path.stem}.whole.mp4")
    make_clip(whole, duration=3.0, faststart=True)
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    whole.unlink()
    return path


def make_garbage_header_file(path: Path) -> Path:
    """A real MP4 whose first 4 KiB are overwritten with noise."""
    whole = path.with_name(f"{path.stem}.whole.mp4")
    make_clip(whole, duration=2.0)
    data = bytearray(whole.read_bytes())
    noise = random.Random(1234).randbytes(4096)
    data[:4096] = noise
    path.write_bytes(bytes(data))
    whole.unlink()
    return path


def ffprobe_json(path: Path, *args: str) -> dict:
    """ffprobe's JSON for `path`, independent of the code under test."""
    completed = subprocess.run(
        [FFPROBE, "-v", "error", "-print_format", "json", *args, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)


def top_level_atoms(path: Path) -> list[str]:
    """Box types at the top of an MP4, in file order ('ftyp', 'moov', 'mdat', ...)."""
    atoms = []
    with path.open("rb") as handle:
        while header := handle.read(8):
            size, kind = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
            atoms.append(kind)
            if size == 1:
                size = int.from_bytes(handle.read(8), "big") - 8
            if size < 8:
                break
            handle.seek(size - 8, 1)
    return atoms


def ffmpeg_children() -> list[psutil.Process]:
    """Live ffmpeg processes started (directly or not) by this test process."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ffmpeg" in child.name() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found

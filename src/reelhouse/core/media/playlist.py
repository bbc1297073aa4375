"""HLS playlists: read and complete the master playlist, read segment durations.

ffmpeg's HLS muxer writes CODECS only when the encoder hands it the H.264 parameter sets up
front (libx264 does, some hardware encoders do not). Players such as Safari and hls.js use
CODECS to pick a rendition, so after every ladder the master playlist is checked and any
missing BANDWIDTH / RESOLUTION / CODECS is filled in from the plan and the segments themselves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from reelhouse.config import MediaSettings, get_settings
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.media.process import run_tool
from reelhouse.core.media.profiles import Rendition

STREAM_INF = "#EXT-X-STREAM-INF:"
AAC_LC_CODEC = "mp4a.40.2"  # ffmpeg's native AAC encoder only writes AAC-LC
_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
_HEXDUMP_LINE = re.compile(r"^[0-9a-f]{8}:((?: [0-9a-f]{2,4})+)", re.MULTILINE)


@dataclass
class VariantEntry:
    uri: str
    attributes: dict[str, str] = field(default_factory=dict)
    """Attribute values as written (quoted strings keep their quotes)."""

    def render(self) -> str:
        attrs = ",".join(f"{key}={value}" for key, value in self.attributes.items())
        return f"{STREAM_INF}{attrs}\n{self.uri}"


@dataclass
class MasterPlaylist:
    header: list[str]
    variants: list[VariantEntry]

    def render(self) -> str:
        return "\n".join(self.header) + "\n" + "\n\n".join(v.render() for v in self.variants) + "\n"


def parse_attributes(text: str) -> dict[str, str]:
    """`BANDWIDTH=1,CODECS="a,b"` -> {'BANDWIDTH': '1', 'CODECS': '"a,b"'} (commas in quotes kept)."""
    return {match.group(1): match.group(2) for match in _ATTRIBUTE.finditer(text)}


def parse_master_playlist(text: str) -> MasterPlaylist:
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an HLS playlist (no #EXTM3U)")
    header: list[str] = []
    variants: list[VariantEntry] = []
    pending: dict[str, str] | None = None
    for line in lines:
        if not line:
            continue
        if line.startswith(STREAM_INF):
            pending = parse_attributes(line[len(STREAM_INF) :])
        elif pending is not None and not line.startswith("#"):
            variants.append(VariantEntry(line, pending))
            pending = None
        elif not variants and pending is None:
            header.append(line)
    return MasterPlaylist(header, variants)


def segment_durations(media_playlist: Path) -> list[float]:
    """#EXTINF durations of a media playlist, in order."""
    durations = []
    for line in media_playlist.read_text().splitlines():
        if line.startswith("#EXTINF:"):
            durations.append(float(line[len("#EXTINF:") :].split(",")[0]))
    return durations


def segment_files(media_playlist: Path) -> list[Path]:
    lines = media_playlist.read_text().splitlines()
    return [media_playlist.parent / line.strip() for line in lines if line.strip() and not line.startswith("#")]


def h264_codec_string(extradata: bytes) -> str | None:
    """RFC 6381 'avc1.PPCCLL' from H.264 extradata, either avcC (MP4) or Annex B (MPEG-TS)."""
    if len(extradata) >= 4 and extradata[0] == 1:
        return f"avc1.{extradata[1]:02x}{extradata[2]:02x}{extradata[3]:02x}"
    position = 0
    while (position := extradata.find(b"\x00\x00\x01", position)) != -1:
        nal = extradata[position + 3 : position + 7]
        if len(nal) == 4 and nal[0] & 0x1F == 7:  # sequence parameter set
            return f"avc1.{nal[1]:02x}{nal[2]:02x}{nal[3]:02x}"
        position += 3
    return None


def parse_hexdump(dump: str) -> bytes:
    """Bytes from ffprobe's `-show_data` dump ('00000000: 0000 0167 42c0 ...  ascii')."""
    hex_digits = "".join(match.group(1).replace(" ", "") for match in _HEXDUMP_LINE.finditer(dump))
    return bytes.fromhex(hex_digits)


async def segment_codecs(segment: Path, settings: MediaSettings | None = None) -> str:
    """The CODECS value for a segment, read from the stream headers ffprobe reports."""
    settings = settings or get_settings().media
    output = await run_tool(
        [
            settings.ffprobe_path,
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_data",
            "-i",
            str(segment),
        ]
    )
    if output.returncode != 0:
        raise PermanentError(f"cannot read segment {segment.name}: {output.stderr_text.strip()[-300:]}")
    codecs: list[str] = []
    for stream in json.loads(output.stdout).get("streams", []):
        if stream.get("codec_type") == "video" and stream.get("codec_name") == "h264":
            codec = h264_codec_string(parse_hexdump(stream.get("extradata", "")))
            if codec:
                codecs.append(codec)
        elif stream.get("codec_type") == "audio" and stream.get("codec_name") == "aac":
            codecs.append(AAC_LC_CODEC)
    if not codecs:
        raise PermanentError(f"no H.264/AAC streams recognised in segment {segment.name}")
    return ",".join(codecs)


async def complete_master_playlist(
    master: Path, planned: dict[str, Rendition], settings: MediaSettings | None = None
) -> MasterPlaylist:
    """Fill in whatever BANDWIDTH / RESOLUTION / CODECS ffmpeg left out; rewrite only if needed.

    `planned` maps each variant playlist's URI (relative to the master) to its rendition.
    """
    playlist = parse_master_playlist(master.read_text())
    changed = False
    for variant in playlist.variants:
        rendition = planned.get(variant.uri)
        if rendition is None:
            raise PermanentError(f"master playlist lists unexpected variant {variant.uri}")
        attrs = variant.attributes
        if "BANDWIDTH" not in attrs:
            attrs["BANDWIDTH"] = str(rendition.peak_bandwidth)
            changed = True
        if "RESOLUTION" not in attrs:
            attrs["RESOLUTION"] = f"{rendition.width}x{rendition.height}"
            changed = True
        if "CODECS" not in attrs:
            segments = segment_files(master.parent / variant.uri)
            if not segments:
                raise PermanentError(f"variant {variant.uri} has no segments")
            attrs["CODECS"] = f'"{await segment_codecs(segments[0], settings)}"'
            changed = True
    if changed:
        master.write_text(playlist.render())
    return playlist

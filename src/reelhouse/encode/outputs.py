"""Move a finished encode from the scratch directory into storage and describe its renditions.

Files go through the run's `FencedOutputs`: keys under `<prefix>/run-<fence>/`, each write
checked against the run's lease, so a run that lost its task can neither overwrite nor delete
the outputs of the run that took over. They become the asset's only when the transcode
publishes them in a fenced transaction (pipeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reelhouse.config import MediaSettings
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.fencing import FencedOutputs
from reelhouse.core.media.ladder import MASTER_PLAYLIST, LadderResult, Mp4Result
from reelhouse.core.media.playlist import parse_master_playlist, segment_codecs, segment_files
from reelhouse.core.storage import guess_content_type
from reelhouse.encode.assets import RenditionRecord
from reelhouse.encode.service import media_url


@dataclass(frozen=True)
class Published:
    master_key: str
    renditions: list[RenditionRecord]
    size_bytes: int

    @property
    def master_url(self) -> str:
        return media_url(self.master_key)


def upload_order(files: list[Path]) -> list[Path]:
    """Segments, then variant playlists, then the master: each playlist appears in storage only
    after everything it points to, so a player that finds one can play it."""

    def rank(path: Path) -> tuple[int, str]:
        if path.name == MASTER_PLAYLIST:
            return (2, str(path))
        return (1 if path.suffix == ".m3u8" else 0, str(path))

    return sorted(files, key=rank)


async def upload_outputs(
    ctx: TaskContext,
    outputs: FencedOutputs,
    out_dir: Path,
    result: LadderResult | Mp4Result,
    *,
    progress_from: float,
    media_settings: MediaSettings,
) -> Published:
    """Upload every output file into the run's scope (`outputs` remembers each key as soon as it
    is stored, so the caller can discard them if anything fails later)."""
    prefix = outputs.scope
    files = upload_order(list(result.files))
    total = sum(path.stat().st_size for path in files) or 1
    done = 0
    await ctx.report_progress(progress_from, force=True, stage="uploading", percent=0.0)
    for path in files:
        await outputs.put(path.relative_to(out_dir).as_posix(), path)
        done += path.stat().st_size
        await ctx.report_progress(
            progress_from + (1 - progress_from) * done / total,
            stage="uploading",
            percent=round(100 * done / total, 1),
            uploaded_bytes=done,
            total_bytes=total,
        )
    if isinstance(result, LadderResult):
        records = _hls_renditions(prefix, out_dir, result)
        master_key = f"{prefix}/{MASTER_PLAYLIST}"
    else:
        records = [await _mp4_rendition(prefix, out_dir, result, media_settings)]
        master_key = records[0].storage_key
    return Published(master_key=master_key, renditions=records, size_bytes=done)


def _hls_renditions(prefix: str, out_dir: Path, result: LadderResult) -> list[RenditionRecord]:
    master = parse_master_playlist(result.master_playlist.read_text())
    attributes = {variant.uri: variant.attributes for variant in master.variants}
    records = []
    for rendition in result.renditions:
        playlist = result.variant_playlists[rendition.name]
        uri = playlist.relative_to(out_dir).as_posix()
        attrs = attributes.get(uri, {})
        segments = segment_files(playlist)
        records.append(
            RenditionRecord(
                name=rendition.name,
                width=rendition.width,
                height=rendition.height,
                bandwidth=int(attrs.get("BANDWIDTH", rendition.peak_bandwidth)),
                codecs=attrs["CODECS"].strip('"') if "CODECS" in attrs else None,
                storage_key=f"{prefix}/{uri}",
                content_type=guess_content_type(uri),
                segment_count=len(segments),
                size_bytes=playlist.stat().st_size + sum(s.stat().st_size for s in segments if s.exists()),
            )
        )
    return records


async def _mp4_rendition(
    prefix: str, out_dir: Path, result: Mp4Result, media_settings: MediaSettings
) -> RenditionRecord:
    rendition = result.rendition
    name = result.path.relative_to(out_dir).as_posix()
    return RenditionRecord(
        name=rendition.name,
        width=rendition.width,
        height=rendition.height,
        bandwidth=rendition.peak_bandwidth,
        codecs=await segment_codecs(result.path, media_settings),
        storage_key=f"{prefix}/{name}",
        content_type=guess_content_type(name),
        segment_count=None,
        size_bytes=result.path.stat().st_size,
    )

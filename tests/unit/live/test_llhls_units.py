"""Units of LL-HLS: the playlist renderer (parts, server control, preload hint), its state
round trip, where a stored playlist stands (blocking reload decisions), the directives and the
in-process wake-up of held requests."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from reelhouse.config import Settings
from reelhouse.core.media.probe import MediaInfo, VideoStreamInfo
from reelhouse.core.media.profiles import builtin_profile, plan_ladder
from reelhouse.core.storage import open_storage
from reelhouse.live.blocking import (
    Directive,
    DirectiveError,
    PlaylistSignals,
    Position,
    hold_playlist,
    parse_directive,
)
from reelhouse.live.hls import LocalOutput, Part, Segment, Track, part_uri
from reelhouse.live.settings import LiveSettings
from reelhouse.live.tasks.transcode import ladder_args, part_layout

PART = re.compile(r'^#EXT-X-PART:DURATION=([0-9.]+),URI="([^"]+)",INDEPENDENT=YES$')


def ll_track(segments: int, pending: int, window: int | None = 6) -> Track:
    """`segments` complete 1 s segments of two parts (0.52 + 0.48 s: 25 fps cut every 0.5 s)
    and `pending` parts of the next one."""
    track = Track("live/1/hls/v0", window=window, part_target=0.52)
    for msn in range(segments):
        uri = f"s1f1-{msn}.ts"
        parts = [Part(part_uri(uri, 0), 0.52), Part(part_uri(uri, 1), 0.48)]
        track.add(Segment(uri, 1.0, parts=parts))
    track.pending_uri = f"s1f1-{track.next_msn}.ts"
    for k in range(pending):
        track.add_part(Part(part_uri(track.pending_uri, k), 0.52))
    track.hint = part_uri(track.pending_uri, pending)
    return track


def test_ll_playlist_has_part_inf_server_control_parts_of_the_last_segments_and_a_hint():
    text = ll_track(segments=8, pending=1).render()
    lines = text.splitlines()
    assert "#EXT-X-PART-INF:PART-TARGET=0.520" in lines
    assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.560" in lines
    assert "#EXT-X-MEDIA-SEQUENCE:2" in lines  # a window of 6 of the 8
    parts = [PART.match(line) for line in lines if line.startswith("#EXT-X-PART:")]
    assert all(parts)
    uris = [m.group(2) for m in parts if m]
    # Parts within three target durations of the edge: the pending one and the last 3 segments'.
    assert uris == ["s1f1-5.0.ts", "s1f1-5.1.ts", "s1f1-6.0.ts", "s1f1-6.1.ts", "s1f1-7.0.ts", "s1f1-7.1.ts",
                    "s1f1-8.0.ts"]  # fmt: skip
    assert lines[-1] == '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="s1f1-8.1.ts"'
    # Each listed segment's parts come right before its EXTINF and add up to its duration.
    at = lines.index("s1f1-6.ts")
    assert lines[at - 3 : at] == [
        '#EXT-X-PART:DURATION=0.520,URI="s1f1-6.0.ts",INDEPENDENT=YES',
        '#EXT-X-PART:DURATION=0.480,URI="s1f1-6.1.ts",INDEPENDENT=YES',
        "#EXTINF:1.000,",
    ]
    assert "#EXT-X-ENDLIST" not in lines


def test_part_target_covers_a_longer_part_and_the_end_drops_the_hint():
    track = ll_track(segments=2, pending=0)
    track.pending_uri = "s1f1-2.ts"
    track.add_part(Part("s1f1-2.0.ts", 0.6))  # a late key frame
    track.close_pending()
    track.end()
    text = track.render()
    assert "#EXT-X-PART-INF:PART-TARGET=0.600" in text and "PART-HOLD-BACK=1.800" in text
    assert text.endswith("#EXTINF:0.600,\ns1f1-2.ts\n#EXT-X-ENDLIST\n")
    assert "PRELOAD-HINT" not in text


def test_a_seam_in_the_segment_being_built_is_marked_before_its_parts():
    track = ll_track(segments=2, pending=0)
    track.pending_discontinuity = True
    track.add_part(Part(part_uri(track.pending_uri or "", 0), 0.52))
    lines = track.render().splitlines()
    seam = lines.index("#EXT-X-DISCONTINUITY")
    assert lines[seam + 1] == '#EXT-X-PART:DURATION=0.520,URI="s1f1-2.0.ts",INDEPENDENT=YES'
    track.add_part(Part("s1f1-2.1.ts", 0.48))
    track.close_pending()
    assert track.segments[-1].discontinuity and track.segments[-1].duration == 1.0


def test_regular_playlist_is_unchanged_by_ll_hls():
    track = Track("live/1/hls/v0", window=3)
    for i in range(4):
        track.add(Segment(f"s1f1-seg_{i:06d}.ts", 1.0))
    assert track.render() == (
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:1\n"
        "#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXTINF:1.000,\ns1f1-seg_000001.ts\n#EXTINF:1.000,\ns1f1-seg_000002.ts\n"
        "#EXTINF:1.000,\ns1f1-seg_000003.ts\n"
    )
    assert "ll" not in track.state()  # nor its stored state


def test_retired_segments_take_their_parts_along():
    track = ll_track(segments=0, pending=0, window=3)
    doomed: list[str] = []
    for msn in range(7):
        uri = f"x-{msn}.ts"
        doomed += track.add(Segment(uri, 1.0, parts=[Part(part_uri(uri, 0), 0.5), Part(part_uri(uri, 1), 0.5)]))
    # Out of the window after 3, deleted a window later.
    assert doomed == ["live/1/hls/v0/x-0.ts", "live/1/hls/v0/x-0.0.ts", "live/1/hls/v0/x-0.1.ts"]


async def test_state_round_trip_and_sealing_parts_a_dead_run_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STORAGE_BACKEND", "fs")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    storage = open_storage(Settings())
    try:
        track = ll_track(segments=3, pending=0)
        assert track.pending_uri is not None
        for k, data in enumerate((b"\x47" * 188, b"\x47\x01" * 94)):
            uri = part_uri(track.pending_uri, k)
            await storage.put(f"{track.folder}/{uri}", data)
            track.add_part(Part(uri, 0.5))
        await track.save(storage)
        loaded = await Track.load(storage, track.folder, 6)
        assert loaded.render() == track.render() and loaded.state() == track.state()
        await loaded.seal_pending(storage)
        assert loaded.pending == [] and loaded.segments[-1].uri == "s1f1-3.ts"
        assert [p.uri for p in loaded.segments[-1].parts] == ["s1f1-3.0.ts", "s1f1-3.1.ts"]
        body = storage.get(f"{track.folder}/s1f1-3.ts")
        parent = b"".join([chunk async for chunk in body])
        assert parent == b"\x47" * 188 + b"\x47\x01" * 94  # the parts' concatenation
    finally:
        await storage.aclose()


def test_position_of_a_rendered_playlist_and_what_it_holds():
    position = Position.of(ll_track(segments=8, pending=1).render())
    assert position.can_block and not position.ended and position.target == 1
    assert (position.last_msn, position.last_parts, position.pending) == (7, 2, 1)
    assert position.hint == "s1f1-8.1.ts"
    assert position.has(7, None) and not position.has(8, None)
    assert position.has(7, 1) and position.has(7, 2)  # past segment 7's last part: part 8.0 is there
    assert position.has(8, 0) and not position.has(8, 1) and not position.has(9, 0)
    # 400 at once: a segment more than two past the last, a part more than 3 past the last part.
    assert position.too_far(10, None) and not position.too_far(9, None)
    assert not position.too_far(8, 3) and position.too_far(8, 4) and position.too_far(9, 3)
    assert not position.too_far(9, 0)
    regular = Position.of("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:4\n#EXTINF:2.0,\na.ts\n")
    assert not regular.can_block and regular.last_msn == 4 and regular.target == 2


def test_directives_are_parsed_or_refused():
    assert parse_directive({}) is None
    assert parse_directive({"_HLS_msn": "12"}) == Directive(12, None)
    assert parse_directive({"_HLS_msn": "12", "_HLS_part": "1", "_HLS_skip": "YES"}) == Directive(12, 1)
    for bad in ({"_HLS_part": "1"}, {"_HLS_msn": "-1"}, {"_HLS_msn": "x"}, {"_HLS_msn": "1", "_HLS_part": "1.5"}):
        with pytest.raises(DirectiveError):
            parse_directive(bad)


async def test_a_held_reload_wakes_when_this_process_stores_the_part():
    track = ll_track(segments=3, pending=1)
    stored = {"text": track.render()}
    signals = PlaylistSignals()
    signals.notify(track.folder)  # the writer is in this process: no polling
    reads = 0

    async def read() -> str | None:
        nonlocal reads
        reads += 1
        return stored["text"]

    waiting = asyncio.create_task(hold_playlist(read, track.folder, Directive(3, 1), signals))
    await asyncio.sleep(0.3)
    assert not waiting.done() and reads == 1  # held, and not re-reading
    track.add_part(Part("s1f1-3.1.ts", 0.48))
    stored["text"] = track.render()
    signals.notify(track.folder)
    held = await asyncio.wait_for(waiting, 2)
    assert not held.timed_out and 'URI="s1f1-3.1.ts"' in (held.text or "")
    with pytest.raises(DirectiveError):
        await hold_playlist(read, track.folder, Directive(9, None), signals)


async def test_a_writer_in_another_process_is_polled_and_a_part_that_never_comes_times_out():
    track = ll_track(segments=3, pending=1)
    stored = {"text": track.render()}
    signals = PlaylistSignals()  # no notify: the transcode runs elsewhere
    reads = 0

    async def read() -> str | None:
        nonlocal reads
        reads += 1
        if reads == 3:  # the other process stores the part meanwhile
            track.add_part(Part("s1f1-3.1.ts", 0.48))
            stored["text"] = track.render()
        return stored["text"]

    held = await asyncio.wait_for(hold_playlist(read, track.folder, Directive(3, 1), signals), 2)
    assert not held.timed_out and reads == 3 and 'URI="s1f1-3.1.ts"' in (held.text or "")
    # Segment 4 never comes: the request is held three target durations (3 s), then answered
    # as timed out (the route's 503), having re-read the playlist meanwhile.
    reads = 10
    held = await hold_playlist(read, track.folder, Directive(4, None), signals)
    assert held.timed_out and reads > 12


@pytest.mark.parametrize(("fps", "frames", "target"), [(25.0, 13, 0.52), (30.0, 15, 0.5), (None, 15, 0.5)])
def test_ffmpeg_cuts_one_gop_parts_with_ll_hls(tmp_path: Path, fps: float | None, frames: int, target: float):
    video = VideoStreamInfo(index=0, codec="h264", width=320, height=240, fps=fps)
    info = MediaInfo(path="x", format_name="flv", duration=None, audio_streams=[], video_streams=[video])
    rungs = plan_ladder(builtin_profile("hls-default"), info)
    regular = LiveSettings(segment_seconds=2)
    ll = LiveSettings(segment_seconds=1, ll_hls=True, part_seconds=0.5)
    assert part_layout(info, regular) == (0, None)
    assert part_layout(info, ll) == (2, target)

    def value(args: list[str], flag: str) -> str:
        return args[args.index(flag) + 1]

    args = ladder_args("rtmp://x/live/y", tmp_path, rungs, info, ll, 1_000_000)
    assert value(args, "-hls_time") == "0.5" and value(args, "-g") == str(frames)
    assert value(args, "-force_key_frames") == "expr:gte(t,n_forced*0.5)"
    args = ladder_args("rtmp://x/live/y", tmp_path, rungs, info, regular, 1_000_000)
    assert value(args, "-hls_time") == "2" and value(args, "-force_key_frames") == "expr:gte(t,n_forced*2)"


async def test_local_outputs_group_parts_into_parents_and_report_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Two renditions' ffmpeg folders (parts written as ffmpeg writes them): each part is stored
    and listed at once, every second part closes a parent (their concatenation), the hint names
    the next part, and each playlist reports where the other rendition stands."""
    monkeypatch.setenv("STORAGE_BACKEND", "fs")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    storage = open_storage(Settings())
    saved: list[str] = []
    outputs = []
    for name in ("360p", "240p"):
        (tmp_path / name).mkdir()
        track = Track(f"live/1/hls/{name}", window=6)
        outputs.append(LocalOutput(tmp_path / name, track, "s1f2-", parts_per_segment=2, part_target=0.52,
                                   on_saved=saved.append))  # fmt: skip
    for output in outputs:
        output.siblings = [o for o in outputs if o is not output]
        await output.prepare(storage)

    def ffmpeg_writes(output: LocalOutput, count: int) -> None:
        lines = ["#EXTM3U"]
        for i in range(count):
            (output.directory / f"seg_{i:06d}.ts").write_bytes(bytes([i]) * 188)
            lines += [f"#EXTINF:{0.52 if i % 2 == 0 else 0.48:.6f},", f"seg_{i:06d}.ts"]
        (output.directory / "index.m3u8").write_text("\n".join(lines) + "\n")

    try:
        ffmpeg_writes(outputs[0], 3)
        ffmpeg_writes(outputs[1], 2)
        assert await outputs[0].sync(storage) == 3 and await outputs[1].sync(storage) == 2
        assert saved == ["live/1/hls/360p", "live/1/hls/240p"]
        text = b"".join([c async for c in storage.get("live/1/hls/360p/index.m3u8")]).decode()
        assert "#EXTINF:1.000,\ns1f2-0.ts\n" in text
        assert '#EXT-X-PART:DURATION=0.520,URI="s1f2-1.0.ts",INDEPENDENT=YES\n' in text
        assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="s1f2-1.1.ts"' in text
        parent = b"".join([c async for c in storage.get("live/1/hls/360p/s1f2-0.ts")])
        assert parent == b"\x00" * 188 + b"\x01" * 188
        # 240p saved after 360p: it reports 360p's part 1.0; 360p saved first saw none of 240p.
        other = b"".join([c async for c in storage.get("live/1/hls/240p/index.m3u8")]).decode()
        assert '#EXT-X-RENDITION-REPORT:URI="../360p/index.m3u8",LAST-MSN=1,LAST-PART=0' in other
        assert "RENDITION-REPORT" not in text
        position = Position.of(other)
        assert (position.last_msn, position.last_parts, position.pending) == (0, 2, 0)
        assert position.hint == "s1f2-1.0.ts"
        # ffmpeg ends: the last part becomes a short segment, the hint goes.
        await outputs[0].flush(storage)
        text = b"".join([c async for c in storage.get("live/1/hls/360p/index.m3u8")]).decode()
        assert "#EXTINF:0.520,\ns1f2-1.ts\n" in text and "PRELOAD-HINT" not in text
    finally:
        await storage.aclose()

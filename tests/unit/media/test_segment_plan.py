"""Where a segment-parallel encode cuts the source, and how many pieces it aims for."""

from __future__ import annotations

from reelhouse.core.media.encoders import VideoPipeline
from reelhouse.core.media.probe import MediaInfo, VideoStreamInfo
from reelhouse.core.media.profiles import Rendition
from reelhouse.core.media.segments import Piece, build_segment_args, plan_segments
from reelhouse.encode.segments import segment_count

EVERY_SECOND = [float(t) for t in range(120)]


def test_pieces_cut_at_keyframes_on_the_hls_grid_near_even_splits():
    pieces = plan_segments(120.0, EVERY_SECOND, 4, min_seconds=10, grid_seconds=6)
    assert [(p.start, p.end) for p in pieces] == [(0.0, 30.0), (30.0, 60.0), (60.0, 90.0), (90.0, None)]
    # 40 is the even split of 3; 42 is the nearest keyframe on the 6 s grid.
    pieces = plan_segments(120.0, EVERY_SECOND, 3, min_seconds=10, grid_seconds=6)
    assert [p.start for p in pieces] == [0.0, 42.0, 78.0]


def test_off_grid_keyframes_are_used_when_nothing_on_the_grid_is_near():
    keyframes = [0.0, 7.0, 19.0, 33.0, 47.0]
    pieces = plan_segments(50.0, keyframes, 2, min_seconds=5, grid_seconds=6)
    assert [p.start for p in pieces] == [0.0, 19.0]


def test_short_sources_and_sparse_keyframes_keep_fewer_pieces():
    assert plan_segments(15.0, EVERY_SECOND[:15], 8, min_seconds=10, grid_seconds=6) == [Piece(0, 0.0, None)]
    # 25 s at a 10 s minimum: at most 2 pieces whatever the workers.
    assert len(plan_segments(25.0, EVERY_SECOND[:25], 8, min_seconds=10, grid_seconds=2)) == 2
    # A source with one keyframe cannot be split.
    assert plan_segments(60.0, [0.0], 4, min_seconds=10, grid_seconds=6) == [Piece(0, 0.0, None)]
    pieces = plan_segments(60.0, EVERY_SECOND[:60], 6, min_seconds=10, grid_seconds=2)
    assert len(pieces) == 6 and all((p.duration or 60.0 - p.start) >= 10 for p in pieces)
    # The grid is preferred only where it leaves room for the pieces still to come.
    pieces = plan_segments(30.0, EVERY_SECOND[:30], 3, min_seconds=10, grid_seconds=6)
    assert [(p.start, p.end) for p in pieces] == [(0.0, 10.0), (10.0, 20.0), (20.0, None)]


def test_piece_count_follows_idle_workers():
    assert segment_count(0, per_worker=2, maximum=64, mode="auto") == 1
    assert segment_count(1, per_worker=2, maximum=64, mode="auto") == 1
    assert segment_count(2, per_worker=2, maximum=64, mode="auto") == 4
    assert segment_count(40, per_worker=2, maximum=64, mode="auto") == 64
    assert segment_count(1, per_worker=2, maximum=64, mode="always") == 2
    assert segment_count(5, per_worker=2, maximum=64, mode="never") == 1


def test_piece_command_has_closed_gops_on_the_absolute_grid_and_source_timestamps():
    info = MediaInfo(
        path="in.mp4",
        format_name="mp4",
        duration=60.0,
        video_streams=[VideoStreamInfo(index=0, codec="h264", width=640, height=360, fps=25.0)],
        audio_streams=[],
    )
    rung = Rendition(name="360p", width=640, height=360, video_bitrate=800_000)
    args = build_segment_args(
        "in.mp4", "out.ts", rung, info, Piece(1, 20.0, 40.0), grid_seconds=6, pipeline=VideoPipeline("cpu"), threads=1
    )
    joined = " ".join(args)
    assert "-ss 19.999500" in joined and "-t 20.000000" in joined
    assert "-g 150 -keyint_min 150 -sc_threshold 0" in joined and "-flags +cgop" in joined
    # 20 s is not on the 6 s grid: the next forced keyframe is at 24 s (4 x 6).
    assert "expr:gte(t+20.000000+0.001,(4+n_forced)*6)" in joined
    assert "-output_ts_offset 20.000000" in joined and "-an" in args and args[-3:] == ["-f", "mpegts", "out.ts"]
    assert args.count("-threads") == 2

"""Twitch live media playlists: ads by title and by DATERANGE, discontinuities, prefetch,
and the reader's notion of "new" and of lost segments; the `both` mode's choice of copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reelhouse.archive.live.playlist import PlaylistError, parse_media_playlist
from reelhouse.archive.live.reader import LiveReader, Position
from reelhouse.archive.live.settle import better_copy
from reelhouse.core.media.probe import MediaInfo, VideoStreamInfo

STITCHED = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-TWITCH-ELAPSED-SECS:200.000
#EXT-X-DATERANGE:ID="playlist-creation-1",CLASS="timestamp",START-DATE="2026-07-01T00:00:00.000Z",END-ON-NEXT=YES
#EXT-X-DATERANGE:ID="stitched-ad-1751328004-4",CLASS="twitch-stitched-ad",START-DATE="2026-07-01T00:00:04.000Z",DURATION=4.000,X-TV-TWITCH-AD-ROLL-TYPE="MIDROLL"
#EXT-X-PROGRAM-DATE-TIME:2026-07-01T00:00:00.000Z
#EXTINF:2.000,live
seg100.ts
#EXT-X-PROGRAM-DATE-TIME:2026-07-01T00:00:02.000Z
#EXTINF:2.000,live
seg101.ts
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-07-01T00:00:04.000Z
#EXTINF:2.000,
https://ads.example/ad0.ts
#EXTINF:2.000,
https://ads.example/ad1.ts
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-07-01T00:00:08.000Z
#EXTINF:2.000,live
seg104.ts
#EXTINF:2.000,Amazon|98765
https://ads.example/titled.ts
#EXT-X-TWITCH-PREFETCH:https://edge.example/seg106.ts
"""


def test_ads_are_found_by_daterange_and_by_title_and_prefetch_is_ignored():
    playlist = parse_media_playlist(STITCHED, "https://edge.example/v1/playlist/x.m3u8")
    assert [s.sequence for s in playlist.segments] == [100, 101, 102, 103, 104, 105]
    assert [s.ad for s in playlist.segments] == [False, False, True, True, False, True]
    assert playlist.segments[0].uri == "https://edge.example/v1/playlist/seg100.ts"
    assert [s.discontinuity for s in playlist.segments] == [False, False, True, False, True, False]
    # A date is carried forward by EXTINF when the next segment has none of its own.
    assert playlist.segments[3].program_date == datetime(2026, 7, 1, 0, 0, 6, tzinfo=UTC)
    # The range is half open: the segment at its end (00:00:08) is content again.
    assert playlist.segments[4].program_date == datetime(2026, 7, 1, 0, 0, 8, tzinfo=UTC)
    assert playlist.elapsed == 200.0 and not playlist.ended and playlist.target_duration == 2.0


def test_an_ad_range_with_only_an_id_and_end_date_counts_too():
    text = STITCHED.replace(
        'CLASS="twitch-stitched-ad",START-DATE="2026-07-01T00:00:04.000Z",DURATION=4.000',
        'START-DATE="2026-07-01T00:00:04.000Z",END-DATE="2026-07-01T00:00:06.000Z"',
    )
    playlist = parse_media_playlist(text, "https://edge.example/")
    assert [s.ad for s in playlist.segments] == [False, False, True, False, False, True]


@pytest.mark.parametrize(
    "text",
    ["", "not a playlist", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nx.m3u8\n", "#EXTM3U\n#EXTINF:abc,\nx.ts\n"],
)
def test_malformed_playlists_are_refused(text):
    with pytest.raises(PlaylistError):
        parse_media_playlist(text, "https://edge.example/")


def test_position_follows_the_stream_clock_across_sessions():
    playlist = parse_media_playlist(STITCHED, "https://edge.example/")
    position = Position()
    position.advance(playlist.segments[1])  # stored up to 00:00:02 in an earlier session
    # Another viewer session numbers segments differently; the dates still say what is new.
    renumbered = parse_media_playlist(STITCHED.replace("MEDIA-SEQUENCE:100", "MEDIA-SEQUENCE:7"), "https://e/")
    assert [position.is_new(s) for s in renumbered.segments] == [False, False, True, True, True, True]
    undated = Position(sequence=101)
    assert undated.is_new(playlist.segments[2]) and not undated.is_new(playlist.segments[1])


def test_segments_that_left_the_window_are_counted_as_lost():
    reader = LiveReader(playback=None, login="x")  # type: ignore[arg-type]
    playlist = parse_media_playlist(STITCHED, "https://edge.example/")
    position = Position(program_date=playlist.segments[0].program_date - timedelta(seconds=6), sequence=97)
    reader._count_gap(position, playlist.segments, playlist.segments[0])
    assert reader.stats.lost == 2  # 23:59:56 was the last one read; :58 was never seen


def _info(duration: float, width: int, height: int) -> MediaInfo:
    video = VideoStreamInfo.model_validate({"index": 0, "codec": "h264", "width": width, "height": height, "fps": 30.0})
    return MediaInfo(path="x", format_name="mp4", duration=duration, video_streams=[video], audio_streams=[])


def test_both_mode_keeps_the_longer_then_the_larger_copy_and_the_vod_on_a_tie():
    tolerance = timedelta(seconds=2)
    assert better_copy(_info(3600, 1280, 720), _info(1800, 1920, 1080), tolerance) == "live"  # VOD cut short
    assert better_copy(_info(3000, 1920, 1080), _info(3600, 1280, 720), tolerance) == "vod"  # recording lost time
    assert better_copy(_info(3599, 1920, 1080), _info(3600, 1280, 720), tolerance) == "live"  # same length, larger
    assert better_copy(_info(3599, 1280, 720), _info(3600, 1280, 720), tolerance) == "vod"


def test_the_source_rendition_and_the_broadcast_id_are_read_from_usher():
    from reelhouse.archive.twitch.playback import choose_rendition

    master = "\n".join(
        [
            "#EXTM3U",
            '#EXT-X-TWITCH-INFO:NODE="video-edge-1",BROADCAST-ID="42",STREAM-TIME="12.0"',
            '#EXT-X-MEDIA:TYPE=VIDEO,GROUP-ID="chunked",NAME="1080p60 (source)",AUTOSELECT=YES,DEFAULT=YES',
            '#EXT-X-STREAM-INF:BANDWIDTH=6000000,RESOLUTION=1920x1080,CODECS="avc1.64002A,mp4a.40.2",VIDEO="chunked"',
            "https://edge/v1/playlist/source.m3u8",
            '#EXT-X-MEDIA:TYPE=VIDEO,GROUP-ID="720p60",NAME="720p60",AUTOSELECT=YES,DEFAULT=YES',
            '#EXT-X-STREAM-INF:BANDWIDTH=9000000,RESOLUTION=1280x720,CODECS="avc1.4D401F,mp4a.40.2",VIDEO="720p60"',
            "https://edge/v1/playlist/720.m3u8",
        ]
    )
    source = choose_rendition(master, "https://usher/api/channel/hls/x.m3u8")
    assert (source.group, source.name, source.broadcast_id) == ("chunked", "1080p60 (source)", "42")
    assert choose_rendition(master, "https://usher/", "720p60").url == "https://edge/v1/playlist/720.m3u8"
    assert choose_rendition(master, "https://usher/", "160p").group == "720p60"  # highest bandwidth

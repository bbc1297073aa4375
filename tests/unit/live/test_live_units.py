"""Units of the live domain: nginx's statistics document, the generated config, playlists."""

from __future__ import annotations

from pathlib import Path

from reelhouse.live.hls import Segment, Track, parse_local_playlist
from reelhouse.live.ingest import IngestStats, RateMeter, parse_stat, render_config
from reelhouse.live.keys import key_hash, key_matches, new_playback_id, new_publish_key
from reelhouse.live.settings import LiveSettings
from reelhouse.live.tasks.process import scrub

STAT = """<?xml version="1.0" encoding="utf-8" ?>
<rtmp><server><application><name>live</name><live>
<stream><name>abc123</name><time>12000</time><bw_in>700000</bw_in><bytes_in>900000</bytes_in>
<bw_video>640000</bw_video><bw_audio>60000</bw_audio>
<client><id>7</id><address>127.0.0.1</address><timestamp>11800</timestamp><publishing/><active/></client>
<client><id>9</id><address>127.0.0.1</address></client>
<meta><video><width>1280</width><height>720</height><frame_rate>30</frame_rate><codec>H264</codec></video>
<audio><codec>AAC</codec></audio></meta><nclients>2</nclients><publishing/><active/></stream>
</live></application></server></rtmp>"""


def test_stat_document_gives_telemetry_of_each_stream():
    stats = parse_stat(STAT)["abc123"]
    assert stats.publishing and stats.client_id == "7" and stats.players == 1
    assert (stats.bytes_in, stats.media_ms) == (900000, 11800)
    # The total is the meter's; nginx's video/audio measures only split it (640:60).
    assert stats.telemetry(700000) == {
        "bitrate": 700000, "video_bitrate": 640000, "audio_bitrate": 60000, "width": 1280, "height": 720,
        "fps": 30.0, "video_codec": "H264", "audio_codec": "AAC", "uptime_seconds": 12.0,
    }  # fmt: skip
    assert stats.telemetry(None)["video_bitrate"] is None


def _reading(bytes_in: int, media_ms: int, client: str = "7") -> IngestStats:
    text = STAT.replace("<bytes_in>900000", f"<bytes_in>{bytes_in}")
    text = text.replace("<timestamp>11800", f"<timestamp>{media_ms}").replace("<id>7</id>", f"<id>{client}</id>")
    return parse_stat(text)["abc123"]


def test_rate_meter_divides_bytes_by_media_time_over_the_last_ten_seconds():
    meter = RateMeter()
    assert meter.add(_reading(0, 0)) is None
    assert meter.add(_reading(60_000, 1_000)) is None  # under 2 s of media: no value yet
    # 75 kB/s = 600 kb/s for the first 4 s, then 100 kB/s = 800 kb/s.
    assert meter.add(_reading(300_000, 4_000)) == 600_000
    for second in range(5, 16):
        reading = meter.add(_reading(300_000 + (second - 4) * 100_000, second * 1_000))
    assert reading == 800_000  # the window has left the slower start behind
    # Another publisher (a new client id) starts over, even with the counter going on.
    assert meter.add(_reading(2_000_000, 500, client="8")) is None


def test_config_has_the_callbacks_with_the_token_and_allows_only_local_pulls(tmp_path: Path):
    conf = render_config(LiveSettings(), tmp_path, "http://127.0.0.1:8080", "tok123")
    assert "on_publish http://127.0.0.1:8080/v1/live/ingest/publish?token=tok123;" in conf
    assert "allow play 127.0.0.1;" in conf and "deny play all;" in conf
    assert f"pid {tmp_path}/nginx.pid;" in conf and "record all;" in conf


def test_keys_are_random_hashed_and_never_the_playback_id():
    key, other = new_publish_key(), new_publish_key()
    assert key != other and len(key) > 30 and new_playback_id() not in key
    assert key_matches(key, key_hash(key)) and not key_matches(other, key_hash(key))


def test_scrub_hides_the_stream_key_of_rtmp_urls():
    assert scrub("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl: Broken pipe") == (
        "rtmp://a.rtmp.youtube.com/live2/***: Broken pipe"
    )


def test_live_window_and_discontinuity_sequence():
    track = Track("live/1/hls/720p", window=3)
    doomed: list[str] = []
    for i in range(4):
        doomed += track.add(Segment(f"a{i}.ts", 1.0))
    doomed += track.add(Segment("b0.ts", 1.0, discontinuity=True))
    for i in range(1, 6):
        doomed += track.add(Segment(f"b{i}.ts", 1.0))
    text = track.render()
    assert "#EXT-X-MEDIA-SEQUENCE:7" in text and "#EXT-X-DISCONTINUITY-SEQUENCE:1" in text
    assert "#EXT-X-DISCONTINUITY\n" not in text  # the seam left the window
    assert doomed == ["live/1/hls/720p/a0.ts", "live/1/hls/720p/a1.ts", "live/1/hls/720p/a2.ts",
                      "live/1/hls/720p/a3.ts"]  # fmt: skip
    assert parse_local_playlist("#EXTM3U\n#EXTINF:1.001,\nseg_000001.ts\n#EXTINF:0.9,\n") == [(1.001, "seg_000001.ts")]

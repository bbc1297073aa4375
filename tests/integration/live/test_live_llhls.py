"""LL-HLS of the live output with real ffmpeg and nginx-rtmp (LIVE_LL_HLS=true): the variant
playlist carries parts, server control and a preload hint; a blocking reload of the next part
answers once that part is stored and lists it; a directive far ahead is refused (400); parts
and their parent segment play, and the parent is the parts' concatenation; the preload-hint
part is served as soon as it exists. With LL-HLS off the playlist stays a regular one and
directives are ignored."""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import httpx
import pytest

from reelhouse.config import Settings
from reelhouse.core.storage import ObjectNotFound
from reelhouse.live.hls import Part, Segment, Track, part_uri

from .conftest import SOURCE, admin_headers, create_stream, ffprobe_json, publish, publish_url, wait_until

PUBLISH_SECONDS = 30
PART = re.compile(r'^#EXT-X-PART:DURATION=([0-9.]+),URI="([^"]+)",INDEPENDENT=YES$')


@pytest.fixture
def ll_hls() -> bool:
    return True


@pytest.fixture
def settings(settings: Settings, monkeypatch: pytest.MonkeyPatch, ll_hls: bool) -> Settings:
    """The live tests' settings with LL-HLS on (0.5 s parts of 1 s segments) unless a test says not."""
    monkeypatch.setenv("LIVE_LL_HLS", "true" if ll_hls else "false")
    monkeypatch.setenv("LIVE_PART_SECONDS", "0.5")
    monkeypatch.setenv("LIVE_SEGMENT_SECONDS", "1")
    return Settings()


def parse(text: str) -> dict:
    """Segments with the parts listed before them, the parts of the segment being built."""
    lines = text.splitlines()
    segments, parts, duration = [], [], None
    for line in lines:
        if m := PART.match(line):
            parts.append((float(m.group(1)), m.group(2)))
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            segments.append({"uri": line, "duration": duration, "parts": parts})
            parts = []
    sequence = int(next(x for x in lines if x.startswith("#EXT-X-MEDIA-SEQUENCE:")).split(":")[1])
    hint = next((x for x in lines if x.startswith("#EXT-X-PRELOAD-HINT:")), None)
    target = next((x for x in lines if x.startswith("#EXT-X-PART-INF:")), None)
    return {
        "segments": segments,
        "pending": parts,
        "last_msn": sequence + len(segments) - 1,
        "hint": re.search(r'URI="([^"]+)"', hint).group(1) if hint else None,
        "part_target": float(target.split("=")[1]) if target else None,
    }


async def variant_url(client: httpx.AsyncClient, stream_id: int) -> str:
    base = f"/v1/streams/{stream_id}/live"

    async def master():
        response = await client.get(f"{base}/master.m3u8")
        return response.text if response.status_code == 200 else None

    text = await wait_until(master, 30, "the master playlist", interval=0.2)
    return f"{base}/" + next(x for x in text.splitlines() if x and not x.startswith("#"))


async def fetch(client: httpx.AsyncClient, url: str) -> bytes:
    response = await client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    return response.content


async def probe_bytes(data: bytes, *args: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".ts") as file:
        Path(file.name).write_bytes(data)
        return await ffprobe_json(*args, file.name)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_ll_hls_parts_blocking_reload_and_preload_hint(client, domain, worker, server):
    stream = await create_stream(client, record=False)
    publisher = await publish(publish_url(domain, stream["publish_key"]), PUBLISH_SECONDS)
    storage = domain.services.storage()
    try:
        variant = await variant_url(client, stream["id"])
        rendition_dir = variant.rsplit("/", 1)[0]
        folder = f"{domain.services.hls_folder(stream['id'])}/{rendition_dir.rsplit('/', 1)[1]}"

        async def with_parts():
            response = await client.get(variant)
            if response.status_code != 200:
                return None
            found = parse(response.text)
            listed = [s for s in found["segments"] if s["parts"]]
            return (response.text, found) if len(listed) >= 2 and found["hint"] else None

        text, playlist = await wait_until(with_parts, 40, "an LL-HLS playlist with parts", interval=0.2)
        assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=" in text
        hold_back = float(re.search(r"PART-HOLD-BACK=([0-9.]+)", text).group(1))
        target = playlist["part_target"]
        assert target is not None and 0.5 <= target <= 0.6 and hold_back >= 2 * target
        # Consistent parts: none longer than the part target; a segment's parts add up to it.
        for segment in [s for s in playlist["segments"] if s["parts"]]:
            assert all(d <= target + 1e-6 for d, _ in segment["parts"]), segment
            assert abs(sum(d for d, _ in segment["parts"]) - segment["duration"]) <= 0.011, segment
            assert segment["parts"][0][1] == segment["uri"].removesuffix(".ts") + ".0.ts"

        # A part and its parent segment play; every part starts with a key frame, and the parent
        # is the byte concatenation of its parts.
        segment = [s for s in playlist["segments"] if s["parts"]][-1]
        datas = [await fetch(client, f"{rendition_dir}/{uri}") for _, uri in segment["parts"]]
        parent = await fetch(client, f"{rendition_dir}/{segment['uri']}")
        assert parent == b"".join(datas)
        for data, (_duration, _) in zip(datas, segment["parts"], strict=True):
            probed = await probe_bytes(data, "-select_streams", "v", "-show_frames", "-show_entries",
                                       "frame=key_frame,width,height", "-read_intervals", "%+#1")  # fmt: skip
            first = probed["frames"][0]
            assert first["key_frame"] == 1 and (first["width"], first["height"]) == (SOURCE["width"], SOURCE["height"])
        info = await probe_bytes(parent, "-show_format", "-show_streams", "-count_frames")
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert abs(int(video["nb_read_frames"]) / SOURCE["fps"] - segment["duration"]) <= 0.05
        assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}

        async def next_part() -> tuple[int, int, str]:
            """The next part, asked right after a part was stored (a blocking reload of the one
            then next), so that it is half a second away; retried if it already is there."""
            for _ in range(5):
                current = parse((await client.get(variant)).text)
                ahead = {"_HLS_msn": current["last_msn"] + 1, "_HLS_part": len(current["pending"])}
                fresh = parse((await client.get(variant, params=ahead)).text)
                hinted = fresh["hint"]
                assert hinted is not None
                try:
                    await storage.stat(f"{folder}/{hinted}")
                except ObjectNotFound:
                    return fresh["last_msn"] + 1, len(fresh["pending"]), hinted
            raise AssertionError("the hinted part was always there already")

        # Blocking reload of the next part: it is not stored when asked, the answer lists it and
        # it is stored by then.
        msn, part, hinted = await next_part()
        response = await client.get(variant, params={"_HLS_msn": msn, "_HLS_part": part})
        assert response.status_code == 200, response.text
        answered = parse(response.text)
        listed = [uri for s in answered["segments"] for _, uri in s["parts"]] + [u for _, u in answered["pending"]]
        assert hinted in listed, (hinted, response.text)
        assert (await storage.stat(f"{folder}/{hinted}")).size > 0
        # Blocking on a whole segment: the next one.
        response = await client.get(variant, params={"_HLS_msn": answered["last_msn"] + 1})
        assert response.status_code == 200 and parse(response.text)["last_msn"] >= answered["last_msn"] + 1

        # The preload-hint part is asked before it exists and served once it does.
        _msn, _part, hint = await next_part()
        data = await fetch(client, f"{rendition_dir}/{hint}")
        probed = await probe_bytes(data, "-select_streams", "v", "-show_frames", "-show_entries", "frame=key_frame",
                                   "-read_intervals", "%+#1")  # fmt: skip
        assert probed["frames"][0]["key_frame"] == 1
        missing = await client.get(f"{rendition_dir}/s9f9-1.0.ts")  # not the hint: 404 at once
        assert missing.status_code == 404

        # Directives far ahead, or malformed, are refused at once.
        last = parse((await client.get(variant)).text)["last_msn"]
        far = await client.get(variant, params={"_HLS_msn": last + 10})
        assert far.status_code == 400 and "too far ahead" in far.json()["error"], far.text
        far_part = await client.get(variant, params={"_HLS_msn": last + 1, "_HLS_part": 9})
        assert far_part.status_code == 400, far_part.text
        for params in ({"_HLS_part": 1}, {"_HLS_msn": "x"}):
            assert (await client.get(variant, params=params)).status_code == 400

        # A player that does not know LL-HLS plays it: ffprobe through the master playlist.
        master = f"{server}/v1/streams/{stream['id']}/live/master.m3u8"
        headers = "".join(f"{k}: {v}\r\n" for k, v in admin_headers().items())
        probed = await ffprobe_json("-headers", headers, "-show_streams", master, timeout=20)
        assert any(s["codec_type"] == "video" for s in probed["streams"])
    finally:
        await publisher.stop()


@pytest.mark.slow
@pytest.mark.parametrize("ll_hls", [False])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_without_ll_hls_the_playlist_is_regular_and_directives_are_ignored(client, domain, worker, server):
    """LIVE_LL_HLS off (the default): no LL tags, 1 s segments, `_HLS_msn` answered at once."""
    assert not domain.services.settings.ll_hls
    stream = await create_stream(client, record=False)
    publisher = await publish(publish_url(domain, stream["publish_key"]), 15)
    try:
        variant = await variant_url(client, stream["id"])

        async def segments():
            response = await client.get(variant)
            found = parse(response.text) if response.status_code == 200 else None
            return response.text if found and len(found["segments"]) >= 2 else None

        text = await wait_until(segments, 30, "a playlist with segments", interval=0.2)
        for tag in ("#EXT-X-PART", "#EXT-X-SERVER-CONTROL", "#EXT-X-PRELOAD-HINT"):
            assert tag not in text
        found = parse(text)
        assert all(re.match(r"^s\d+t\d+f\d+-seg_\d{6}\.ts$", s["uri"]) for s in found["segments"]), text
        response = await client.get(variant, params={"_HLS_msn": found["last_msn"] + 50, "_HLS_part": 0})
        assert response.status_code == 200 and "#EXT-X-PART" not in response.text
        page_html = (await client.get(f"/live/streams/{stream['id']}")).text
        assert 'data-low-latency="false"' in page_html
    finally:
        await publisher.stop()


@pytest.mark.slow
async def test_blocking_reload_route_answers_from_storage_through_api_and_signed_links(api, domain):
    """The route alone, on SQLite and PostgreSQL, over playlists stored as a transcode in another
    process would store them (no in-process signal): held until the part is stored, 503 when
    it does not come in three target durations, 400 far ahead; the same through a signed link."""
    stream = await create_stream(api, record=False)
    storage = domain.services.storage()
    track = Track(f"{domain.services.hls_folder(stream['id'])}/v0", window=6, part_target=0.52)
    for msn in range(3):
        uri = f"s1f1-{msn}.ts"
        track.add(Segment(uri, 1.0, parts=[Part(part_uri(uri, 0), 0.52), Part(part_uri(uri, 1), 0.48)]))
    track.pending_uri, track.hint = "s1f1-3.ts", "s1f1-3.0.ts"
    await track.save(storage)
    base = f"/v1/streams/{stream['id']}/live/v0/index.m3u8"
    link = (await api.get(f"/v1/streams/{stream['id']}/link")).json()["url"]
    signed = link.removeprefix("http://testserver").replace("master.m3u8", "v0/index.m3u8")
    for url, headers in ((base, None), (signed, {"Authorization": ""})):
        now = await api.get(url, params={"_HLS_msn": 2, "_HLS_part": 1}, headers=headers)
        assert now.status_code == 200 and now.text == track.render()
        far = await api.get(url, params={"_HLS_msn": 9}, headers=headers)
        assert far.status_code == 400 and "too far ahead" in far.json()["error"]

    async def store_next_part() -> None:
        await storage.put(f"{track.folder}/s1f1-3.0.ts", b"\x47" * 188)
        track.add_part(Part("s1f1-3.0.ts", 0.52))
        track.hint = "s1f1-3.1.ts"
        await track.save(storage)

    waiting = asyncio.create_task(api.get(signed, params={"_HLS_msn": 3, "_HLS_part": 0}))
    hinted = asyncio.create_task(api.get(base.replace("index.m3u8", "s1f1-3.0.ts")))
    done, _ = await asyncio.wait({waiting, hinted}, timeout=0.5)
    assert not done, "held until the part is stored"
    await store_next_part()
    response = await asyncio.wait_for(waiting, 5)
    assert response.status_code == 200 and 'URI="s1f1-3.0.ts"' in response.text
    assert response.text.endswith('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="s1f1-3.1.ts"\n')
    part = await asyncio.wait_for(hinted, 5)
    assert part.status_code == 200 and part.content == b"\x47" * 188
    # Nothing stores part 3.1: 503 after three target durations.
    timed_out = await api.get(base, params={"_HLS_msn": 3, "_HLS_part": 1})
    assert timed_out.status_code == 503 and timed_out.headers["Retry-After"] == "1", timed_out.text
    assert (await api.get(base.replace("index.m3u8", "s1f1-3.1.ts"))).status_code == 404  # waited, never came
    # Once the stream ends, a directive is answered at once with the closed playlist.
    track.end()
    await track.save(storage)
    ended = await api.get(base, params={"_HLS_msn": 4})
    assert ended.status_code == 200 and ended.text.endswith("#EXT-X-ENDLIST\n")


PLAY = """async ([url, lowLatency]) => {
  const video = document.createElement("video");
  video.muted = true;
  document.body.append(video);
  const hls = new Hls({ lowLatencyMode: lowLatency });
  const loaded = { parts: 0, fragments: 0, errors: [] };
  hls.on(Hls.Events.FRAG_LOADED, (_e, data) => { if (data.part) loaded.parts++; else loaded.fragments++; });
  hls.on(Hls.Events.ERROR, (_e, data) => { if (data.fatal) loaded.errors.push(data.details); });
  hls.loadSource(url);
  hls.attachMedia(video);
  await video.play().catch(() => {});
  const started = performance.now();
  while (performance.now() - started < 8000 && loaded.errors.length === 0) {
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const result = { ...loaded, currentTime: video.currentTime, latency: hls.latency, ll: hls.lowLatencyMode };
  hls.destroy();
  return result;
}"""


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_hls_js_plays_the_parts_in_chromium(client, domain, worker, server):
    """hls.js in lowLatencyMode (as on the live page) loads the parts and plays."""
    from tests.e2e.harness import CHROMIUM, CHROMIUM_ARGS, chromium_available

    if not chromium_available():
        pytest.fail(f"Chromium is required ({CHROMIUM})")
    from playwright.async_api import async_playwright

    stream = await create_stream(client, record=False)
    publisher = await publish(publish_url(domain, stream["publish_key"]), 25)
    try:
        await variant_url(client, stream["id"])
        link = (await client.get(f"/v1/streams/{stream['id']}/link")).json()["url"]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = await browser.new_page()
                await page.goto(f"{server}/healthz")
                await page.add_script_tag(url=f"{server}/static/vendor/hls.js")
                played = await page.evaluate(PLAY, [link, True])
            finally:
                await browser.close()
        print("hls.js:", played)
        # The live page asks hls.js for low-latency mode.
        page_html = (await client.get(f"/live/streams/{stream['id']}")).text
        assert 'data-kind="hls" data-low-latency="true"' in page_html, page_html[:500]
        assert played["errors"] == [] and played["ll"] is True
        assert played["parts"] > 0, played
        assert played["currentTime"] > 1.0, played
    finally:
        await publisher.stop()

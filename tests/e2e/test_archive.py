"""Archive in the browser: channels, the VOD list, a VOD played with its chat replayed in step,
moderation shown, an operator's reprocess followed live, and a viewer kept out."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.e2e.harness import run_async, screenshot_all
from tests.e2e.test_encode import accept_confirmation
from tests.fakes.hls_origin import generate_hls
from tests.media_fixtures import make_clip

VOD = "5550001"
FRESH = "5550002"
STEP = 0.5
LINES = 40  # chat lines at 0, 0.5, ... 19.5 s
DELETED = 6  # the line at 3.0 s is deleted by a moderator at 6.2 s


def chat_rows(started: datetime) -> list[dict]:
    rows = []
    for i in range(LINES):
        rel = i * STEP
        row = {
            "channel": "webchan",
            "vod_id": VOD,
            "message_id": f"m-{i}",
            "kind": "action" if i == 5 else "message",
            "timestamp": started + timedelta(seconds=rel),
            "rel_timestamp": rel,
            "user_id": str(100 + i % 4),
            "username": f"viewer{i % 4}",
            "display_name": f"Viewer{i % 4}",
            "message": "Kappa hello there" if i == 2 else f"line {i}",
            "badges": "moderator/1,subscriber/12" if i % 4 == 0 else "",
            "emotes": "25:0-4" if i == 2 else "",
            "color": ["#0000FF", "#FF7F50", "#1E90FF", "#9ACD32"][i % 4],
            "bits": 0,
            "tags": {},
        }
        rows.append(row)
    rows.append(
        {
            "channel": "webchan",
            "vod_id": VOD,
            "message_id": "clear-1",
            "kind": "clearmsg",
            "timestamp": started + timedelta(seconds=6.2),
            "rel_timestamp": 6.2,
            "user_id": None,
            "username": "viewer2",
            "display_name": None,
            "message": f"line {DELETED}",
            "badges": None,
            "emotes": None,
            "color": None,
            "bits": 0,
            "tags": {"target-msg-id": f"m-{DELETED}"},
        }
    )
    return rows


@pytest.fixture(scope="module")
def archive_data(server, tmp_path_factory, hls_origin):
    """Two VODs in the server's database: one downloaded with 20 s of chat, one not yet."""
    from reelhouse.archive.models import chat_messages
    from reelhouse.archive.store import ChannelStore, VodStore
    from reelhouse.archive.store.vods import new_vod_row
    from reelhouse.core.db.engine import create_engine

    media = tmp_path_factory.mktemp("vod")
    clip = make_clip(media / f"twitch_{VOD}.mp4", duration=20.0)
    origin, _url = hls_origin
    origin.add_vod(
        FRESH, generate_hls(media / "hls", duration=8, segment_seconds=1, size="320x180", video_bitrate="2M")
    )
    started = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)

    async def seed() -> None:
        engine = create_engine(server.env["DATABASE_URL"])
        try:
            await ChannelStore(engine).add_channel("webchan", source="api")
            vods = VodStore(engine)
            await vods.insert_new(
                [
                    new_vod_row(VOD, "webchan", title="Speedrun night", date=started, duration_seconds=20),
                    new_vod_row(
                        FRESH, "webchan", title="Fresh stream", date=started + timedelta(days=1), duration_seconds=8
                    ),
                ]
            )
            await vods.update(VOD, downloaded_path=str(clip), download_state="complete", processed=True)
            async with engine.begin() as conn:
                await conn.execute(chat_messages.insert(), chat_rows(started))
        finally:
            await engine.dispose()

    run_async(seed())
    return {"started": started}


def test_channels_and_vod_list_search(open_page, server, archive_data):
    page, _errors = open_page("admin")
    page.goto(server.url + "/archive/channels")
    row = page.locator("tr[data-channel='webchan']")
    expect(row).to_contain_text("closed")
    screenshot_all(page, "archive-channels")
    row.get_by_role("button", name=re.compile("^Pause")).click()
    accept_confirmation(page)
    expect(row.get_by_test_id("channel-state")).to_have_text("paused")
    row.get_by_role("button", name=re.compile("^Resume")).click()
    expect(row.get_by_test_id("channel-state")).to_have_text("watching")
    page.get_by_label("How webchan is archived").select_option("both")
    # The save reloads the page: wait for that navigation rather than start another one.
    with (
        page.expect_navigation(),
        page.expect_response(lambda r: r.url.endswith("/channels/webchan") and r.request.method == "PATCH") as saved,
    ):
        page.locator("tr[data-channel='webchan']").get_by_role("button", name="Save").click()
    assert saved.value.status == 200
    expect(page.get_by_label("How webchan is archived")).to_have_value("both")
    with server.api("admin") as api:  # the other tests archive webchan's VODs the default way
        assert api.patch("/channels/webchan", json={"record_mode": "vod"}).status_code == 200
    page.goto(server.url + "/archive/vods")
    expect(page.locator(f"tr[data-vod-id='{VOD}']")).to_contain_text("Speedrun night")
    page.get_by_label("Title").fill("speedrun")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"q=speedrun"))
    page.get_by_label("State").select_option("pending")
    expect(page.locator("tbody")).to_contain_text("No VOD matches")
    page.goto(server.url + "/archive/vods")
    screenshot_all(page, "archive-vods")


def shown_chat(page) -> list[float]:
    return page.eval_on_selector_all("#chat li:not(.mod-note)", "items => items.map(i => Number(i.dataset.rel))")


def test_vod_plays_and_chat_follows_the_player(open_page, server, archive_data):
    page, _errors = open_page("viewer")
    page.goto(server.url + f"/archive/vods/{VOD}")
    expect(page.get_by_test_id("operator-actions")).to_have_count(0)
    page.evaluate("() => document.getElementById('player').play()")
    page.wait_for_function("() => document.getElementById('player').currentTime > 1.2")
    page.evaluate("() => document.getElementById('player').pause()")

    for target in (10.3, 4.1, 15.75):
        page.evaluate(f"() => {{ document.getElementById('player').currentTime = {target}; }}")
        # The replay has caught up with the player, which has reached the target.
        page.wait_for_function(
            """target => {
                const player = document.getElementById('player');
                const until = Number(document.getElementById('chat').dataset.until);
                return until === player.currentTime && Math.abs(player.currentTime - target) < 0.05;
            }""",
            arg=target,
        )
        at = page.evaluate("() => document.getElementById('player').currentTime")
        expected = [i * STEP for i in range(LINES) if i * STEP <= at]
        assert shown_chat(page) == expected, f"at {at}s"

    # Past the moderator's deletion: the line is shown struck through; the /me line as an action.
    deleted = page.locator(f"#chat li[data-id='m-{DELETED}']")
    expect(deleted).to_have_class(re.compile("deleted"))
    assert (
        page.eval_on_selector(f"#chat li[data-id='m-{DELETED}'] .text", "e => getComputedStyle(e).textDecorationLine")
        == "line-through"
    )
    expect(page.locator("#chat li.mod-note")).to_contain_text("deleted a message")
    expect(page.locator("#chat li[data-id='m-5']")).to_have_class(re.compile("action"))
    expect(page.locator("#chat li[data-id='m-2'] img.emote")).to_have_attribute("alt", "Kappa")
    expect(page.locator("#chat li[data-id='m-0'] .badge").first).to_have_text("moderator")
    # Stills along the VOD seek the player (and the chat with it).
    stills = page.locator(".scrub button.thumb")
    expect(stills).to_have_count(8, timeout=30_000)
    stills.nth(1).click()
    page.wait_for_function("() => Math.abs(document.getElementById('player').currentTime - 3.75) < 0.05")
    page.wait_for_function(
        "() => Number(document.getElementById('chat').dataset.until) === document.getElementById('player').currentTime"
    )
    at = page.evaluate("() => document.getElementById('player').currentTime")
    assert shown_chat(page) == [i * STEP for i in range(LINES) if i * STEP <= at]
    screenshot_all(page, "archive-vod")


def test_operator_reprocesses_and_watches_progress_live(open_page, server, archive_data):
    page, _errors = open_page("operator")
    page.goto(server.url + f"/archive/vods/{FRESH}")
    # The channel is watched, so the archive fetches the new VOD by itself first.
    expect(page.get_by_test_id("download-state")).to_have_text("complete", timeout=120_000)
    # The page records every state it shows: a short download can pass through "downloading"
    # between two polls of a locator.
    page.evaluate(
        """() => {
            window.shownStates = [];
            new MutationObserver(() => {
                const state = document.querySelector('[data-testid="download-state"]');
                if (state) window.shownStates.push(state.textContent.trim());
            }).observe(document.body, {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.get_by_role("button", name="Reprocess").click()
    accept_confirmation(page)
    # Followed over Server-Sent Events: the page is not reloaded.
    page.wait_for_function("() => window.shownStates.includes('downloading')", timeout=60_000)
    expect(page.get_by_test_id("download-state")).to_have_text("complete", timeout=120_000)
    expect(page.get_by_test_id("vod-percent")).to_have_text("100 %")


def test_viewer_is_refused_operator_actions_by_the_api(open_page, server, archive_data):
    page, errors = open_page("viewer")
    page.goto(server.url + f"/archive/vods/{VOD}")
    errors.allow("403")
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "rh_csrf")
    forced = page.request.post(server.url + f"/vods/{VOD}/reprocess", headers={"X-CSRF-Token": csrf})
    assert forced.status == 403 and forced.json()["error"] == "requires role operator"

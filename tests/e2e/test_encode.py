"""Encode in the browser: profiles CRUD, an upload encoded with live progress and played,
operator-only actions, failed tasks retried from the operations pages."""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from tests.e2e.harness import screenshot_all
from tests.media_fixtures import make_clip

SMALL = {
    "name": "web-small",
    "kind": "hls",
    "segment_seconds": 2,
    "renditions": [
        {"name": "240p", "width": 320, "height": 240, "video_bitrate": "300k", "audio_bitrate": "64k"},
        {"name": "120p", "width": 160, "height": 120, "video_bitrate": "120k", "audio_bitrate": "48k"},
    ],
}


def accept_confirmation(page) -> None:
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Confirm").click()


def test_profiles_are_created_from_a_builtin_edited_and_deleted(open_page, server):
    page, errors = open_page("admin")
    page.goto(server.url + "/encode/profiles")
    screenshot_all(page, "encode-profiles")
    page.get_by_role("link", name="New profile").click()
    expect(page.get_by_label(re.compile("^Definition"))).to_contain_text('"renditions"')
    screenshot_all(page, "encode-profile-new")

    # An invalid definition: the flash carries exactly the API's message.
    bad = {**SMALL, "renditions": []}
    expected = server.api().post("/v1/profiles", json=bad).json()["error"]
    errors.allow("400")
    page.get_by_label(re.compile("^Definition")).fill(json.dumps(bad))
    page.get_by_role("button", name="Create profile").click()
    expect(page.locator(".flash-error")).to_have_text(re.compile(re.escape(expected)))

    page.get_by_label(re.compile("^Definition")).fill(json.dumps(SMALL))
    page.get_by_role("button", name="Create profile").click()
    expect(page).to_have_url(server.url + "/encode/profiles")
    row = page.locator("tr[data-profile='web-small']")
    expect(row).to_contain_text("240p (320×240)")

    row.get_by_role("link", name=re.compile("^Edit")).click()
    edited = {**SMALL, "renditions": SMALL["renditions"][:1]}
    page.get_by_label(re.compile("^Definition")).fill(json.dumps(edited))
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(server.url + "/encode/profiles")
    expect(row).not_to_contain_text("120p")

    server.api().post("/v1/profiles", json={**SMALL, "name": "web-doomed"})
    page.reload()
    page.locator("tr[data-profile='web-doomed']").get_by_role("button", name=re.compile("^Delete")).click()
    accept_confirmation(page)
    expect(page.locator("tr[data-profile='web-doomed']")).to_have_count(0)
    assert server.api().get("/v1/profiles/web-doomed").status_code == 404


def test_upload_encode_progress_and_playback(open_page, server, tmp_path):
    server.api().post("/v1/profiles", json={**SMALL, "name": "web-play"})
    clip = make_clip(tmp_path / "clip.mp4", duration=8.0, width=320, height=240)
    page, _errors = open_page("operator")
    page.goto(server.url + "/encode/jobs/new")
    screenshot_all(page, "encode-new-job")
    page.get_by_label(re.compile("^File")).set_input_files(str(clip))
    page.get_by_label("Profile").select_option("web-play")
    page.get_by_label(re.compile("preset")).select_option("ultrafast")
    # A small upload can finish, and the page move on to the job, before a poll of the bar's
    # visibility: the page itself records that the bar was shown (sessionStorage outlives the
    # navigation).
    page.evaluate(
        """() => {
            const bar = document.getElementById("upload-progress");
            new MutationObserver(() => {
                if (!bar.hidden) sessionStorage.setItem("upload-progress-shown", "yes");
            }).observe(bar, {attributes: true});
        }"""
    )
    page.get_by_role("button", name="Start encode").click()
    page.wait_for_url(re.compile(r"/encode/jobs/\d+$"))
    assert page.evaluate("() => sessionStorage.getItem('upload-progress-shown')") == "yes"
    job_id = int(page.url.rsplit("/", 1)[1])

    # The page follows the job live until it is done: no reload by the test.
    expect(page.get_by_test_id("job-status")).to_have_text("completed", timeout=180_000)
    expect(page.get_by_test_id("job-progress")).to_have_text("100 %")
    expect(page.get_by_test_id("job-log")).to_contain_text("encode.transcode")

    video = page.locator("video#player")
    expect(video).to_be_visible()
    page.evaluate("() => document.getElementById('player').play()")
    page.wait_for_function("() => document.getElementById('player').currentTime > 1", timeout=30_000)
    # Another rendition plays from its own variant playlist.
    low = page.locator("#rendition option", has_text="120p").get_attribute("value")
    page.get_by_label("Rendition").select_option(low)
    page.evaluate("() => document.getElementById('player').play()")
    page.wait_for_function(
        "() => { const v = document.getElementById('player'); return v.currentTime > 0.5 && v.videoHeight === 120; }",
        timeout=30_000,
    )
    expect(page.locator(".thumbs button.thumb img")).to_have_count(6, timeout=30_000)
    page.evaluate("() => document.getElementById('player').pause()")
    screenshot_all(page, "encode-job-detail")

    page.goto(server.url + "/encode/jobs")
    expect(page.locator(f"tr[data-job-id='{job_id}']")).to_contain_text("completed")
    screenshot_all(page, "encode-jobs")


def test_viewer_sees_no_operator_actions_and_is_refused_by_the_api(open_page, server, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with server.api("operator") as api:
        created = api.post("/v1/jobs", files={"file": ("broken.mp4", broken.read_bytes(), "video/mp4")})
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
    page, errors = open_page("viewer")
    page.goto(server.url + f"/encode/jobs/{job_id}")
    expect(page.get_by_test_id("job-status")).to_have_text(re.compile("failed|dead"), timeout=60_000)
    expect(page.get_by_role("button", name=re.compile("Retry|Cancel"))).to_have_count(0)
    errors.allow("403")
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "rh_csrf")
    forced = page.request.post(server.url + f"/v1/jobs/{job_id}/retry", headers={"X-CSRF-Token": csrf})
    assert forced.status == 403 and forced.json()["error"] == "requires role operator"


def test_operations_pages_show_status_workers_and_retry_failed_tasks(open_page, server, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00garbage" * 200)
    with server.api("operator") as api:
        job_id = api.post("/v1/jobs", files={"file": ("broken.mp4", broken.read_bytes(), "video/mp4")}).json()["job_id"]
        for _ in range(300):
            job = api.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("failed", "dead"):
                break
        task = next(t for t in job["tasks"] if t["status"] in ("failed", "dead"))

    page, _errors = open_page("operator")
    page.goto(server.url + "/ops/status")
    expect(page.locator("#chart-throughput .uplot")).to_have_count(1)
    expect(page.locator("#chart-durations .uplot")).to_have_count(1)
    screenshot_all(page, "ops-status")

    page.goto(server.url + "/ops/workers")
    expect(page.locator("tbody")).to_contain_text("healthy")
    screenshot_all(page, "ops-workers")

    page.goto(server.url + f"/ops/tasks?status={task['status']}")
    row = page.locator(f"tr[data-task-id='{task['id']}']")
    expect(row).to_contain_text(task["kind"])
    screenshot_all(page, "ops-tasks")
    row.get_by_role("button", name=re.compile("^Retry")).click()
    accept_confirmation(page)
    # Requeued with a fresh budget: it leaves its old state, or fails again at a later time.
    with server.api() as api:
        for _ in range(200):
            retried = api.get(f"/v1/tasks/{task['id']}").json()
            if retried["status"] != task["status"] or retried["finished_at"] != task["finished_at"]:
                break
        else:
            raise AssertionError(f"task {task['id']} was not requeued: {retried}")

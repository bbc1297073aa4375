"""VOD endpoints: vod-tender's paths and field names, keyset pagination, and the mutations'
auth and error paths."""

from __future__ import annotations

from sqlalchemy import select, update

from reelhouse.archive.models import vods
from reelhouse.core.db.models import jobs, tasks
from reelhouse.core.jobs import states
from tests.archive_support import vod_jobs
from tests.integration.archive_api.conftest import BASE_DATE, add_vod, days

LIST_FIELDS = {"id", "title", "date", "processed", "youtube_url"}
DETAIL_FIELDS = {
    "id",
    "title",
    "date",
    "duration_seconds",
    "processed",
    "youtube_url",
    "downloaded_path",
    "download_state",
    "download_retries",
    "download_total",
    "progress_updated_at",
    "description",
}
PROGRESS_FIELDS = {
    "vod_id",
    "state",
    "percent",
    "retries",
    "total_bytes",
    "downloaded_path",
    "processed",
    "processing_error",
    "youtube_url",
    "progress_updated_at",
    "bytes",
    "speed",
    "eta",
}


async def test_list_is_a_bare_array_with_vod_tender_fields_newest_first(client, engine):
    await add_vod(engine, "100", date=BASE_DATE - days(2))
    await add_vod(engine, "101", date=BASE_DATE, processed=True, youtube_url="https://www.youtube.com/watch?v=x")
    response = await client.get("/vods")
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list) and [item["id"] for item in body] == ["101", "100"]
    assert set(body[0]) >= LIST_FIELDS
    assert body[0]["date"] == "2025-03-01T12:00:00Z"
    assert body[0]["processed"] is True and body[1]["processed"] is False
    assert "X-Next-Cursor" not in response.headers  # one page only


async def test_keyset_pagination_over_three_pages_with_channel_filter(client, engine):
    # Seven VODs in alpha, two of them sharing a date (the id breaks the tie), and noise in beta
    # interleaved by date so a missing channel filter would show.
    dates = [BASE_DATE - days(i) for i in (0, 1, 1, 2, 3, 4, 5)]
    for index, date in enumerate(dates):
        await add_vod(engine, f"a{index}", channel="alpha", date=date)
        await add_vod(engine, f"b{index}", channel="beta", date=date - days(0.5))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"channel": "alpha", "limit": 3, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/vods", params=params)
        assert response.status_code == 200
        page = response.json()
        pages += 1
        assert all(item["channel"] == "alpha" for item in page)
        seen += [item["id"] for item in page]
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in response.headers
            break
        assert response.headers["Link"].endswith('rel="next"') and "channel=alpha" in response.headers["Link"]
    assert pages == 3
    # Same date: the row inserted later (higher id) comes first, and nothing repeats or goes missing.
    assert seen == ["a0", "a2", "a1", "a3", "a4", "a5", "a6"]


async def test_list_limits_offset_and_bad_cursor(client, engine):
    for index in range(4):
        await add_vod(engine, f"v{index}", date=BASE_DATE - days(index))
    # vod-tender's rule: limit <= 0 or > 200 falls back to 50 rather than failing.
    assert len((await client.get("/vods", params={"limit": 0})).json()) == 4
    assert len((await client.get("/vods", params={"limit": 500})).json()) == 4
    offset = (await client.get("/vods", params={"limit": 2, "offset": 2})).json()
    assert [item["id"] for item in offset] == ["v2", "v3"]
    bad = await client.get("/vods", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and "cursor" in bad.json()["error"]
    not_a_number = await client.get("/vods", params={"limit": "many"})
    assert not_a_number.status_code == 422 and "limit" in not_a_number.json()["error"]


async def test_detail_and_progress_fields(client, engine):
    await add_vod(
        engine,
        "200",
        duration_seconds=3600,
        download_state="downloading",
        download_bytes=250,
        download_total=1000,
        download_speed=125.0,
        download_eta_seconds=6.0,
        download_retries=1,
        description="custom text",
    )
    detail = (await client.get("/vods/200")).json()
    assert set(detail) >= DETAIL_FIELDS
    assert detail["id"] == "200" and detail["duration_seconds"] == 3600 and detail["description"] == "custom text"
    progress = (await client.get("/vods/200/progress")).json()
    assert set(progress) >= PROGRESS_FIELDS
    assert progress["vod_id"] == "200" and progress["percent"] == 25.0
    assert progress["bytes"] == 250 and progress["total_bytes"] == 1000
    assert progress["speed"] == 125.0 and progress["eta"] == 6.0 and progress["retries"] == 1


async def test_progress_percent_rules(client, engine):
    # A raw yt-dlp line (what vod-tender stored) still yields a percentage.
    await add_vod(engine, "p1", download_state="[download]  42.5% of ~1.00GiB at 2.00MiB/s ETA 05:00")
    await add_vod(engine, "p2", processed=True)
    await add_vod(engine, "p3")
    await add_vod(engine, "p4", download_bytes=5000, download_total=1000)  # clamped
    percents = {vid: (await client.get(f"/vods/{vid}/progress")).json()["percent"] for vid in ("p1", "p2", "p3", "p4")}
    assert percents == {"p1": 42.5, "p2": 100.0, "p3": 0.0, "p4": 100.0}


async def test_unknown_vod_is_404_json_everywhere(client, role_headers):
    for path in ("/vods/nope", "/vods/nope/progress", "/vods/nope/description"):
        response = await client.get(path)
        assert response.status_code == 404 and "nope" in response.json()["error"]
    operator = role_headers["operator"]
    for path in ("/vods/nope/reprocess", "/vods/nope/cancel"):
        assert (await client.post(path, headers=operator)).status_code == 404
    put = await client.put("/vods/nope/description", json={"description": "x"}, headers=operator)
    assert put.status_code == 404


async def test_mutations_need_an_operator(client, engine, role_headers):
    await add_vod(engine, "300")
    calls = [
        ("POST", "/vods/300/reprocess", None),
        ("POST", "/vods/300/cancel", None),
        ("PUT", "/vods/300/description", {"description": "x"}),
        ("PATCH", "/vods/300/description", {"description": "x"}),
    ]
    for method, path, body in calls:
        anonymous = await client.request(method, path, json=body)
        assert anonymous.status_code == 401, path
        viewer = await client.request(method, path, json=body, headers=role_headers["viewer"])
        assert viewer.status_code == 403 and "operator" in viewer.json()["error"], path


async def test_reprocess_resets_with_booleans_and_enqueues_a_fresh_job(runtime, client, engine, role_headers):
    await add_vod(
        engine,
        "400",
        processed=True,
        processing_error="boom",
        youtube_url="https://youtu.be/x",
        downloaded_path="/data/x.mp4",
        download_state="complete",
        download_retries=4,
        download_bytes=10,
        download_total=10,
    )
    first_job = await vod_jobs(runtime).enqueue("400")
    response = await client.post("/vods/400/reprocess", headers=role_headers["operator"])
    assert response.status_code == 204
    new_job = int(response.headers["X-Job-Id"])
    assert new_job != first_job and response.headers["Location"] == f"/v1/jobs/{new_job}"
    async with engine.connect() as conn:
        row = (await conn.execute(select(vods).where(vods.c.twitch_vod_id == "400"))).one()
        old_status = (await conn.execute(select(jobs.c.status).where(jobs.c.id == first_job))).scalar_one()
        new_tasks = (await conn.execute(select(tasks.c.kind, tasks.c.status).where(tasks.c.job_id == new_job))).all()
    # The columns vod-tender reset (its `processed=0` failed on PostgreSQL's boolean column).
    assert row.processed is False and row.processing_error is None and row.youtube_url is None
    assert row.downloaded_path is None and row.download_retries == 0 and row.download_total == 0
    assert row.job_id == new_job
    assert old_status == states.JOB_CANCELLED  # the superseded queued job does not run too
    assert new_tasks == [("vod.download", states.QUEUED)]


async def test_reprocess_refuses_while_running_and_for_placeholders(runtime, client, engine, role_headers):
    await add_vod(engine, "500")
    job_id = await vod_jobs(runtime).enqueue("500")
    async with engine.begin() as conn:
        await conn.execute(update(tasks).where(tasks.c.job_id == job_id).values(status=states.RUNNING))
    busy = await client.post("/vods/500/reprocess", headers=role_headers["operator"])
    assert busy.status_code == 409 and "/vods/500/cancel" in busy.json()["error"]
    await add_vod(engine, "live-1700000000", is_placeholder=True)
    placeholder = await client.post("/vods/live-1700000000/reprocess", headers=role_headers["operator"])
    assert placeholder.status_code == 409 and "placeholder" in placeholder.json()["error"]


async def test_cancel_is_202_when_work_stopped_and_204_otherwise(runtime, client, engine, role_headers):
    await add_vod(engine, "600")
    idle = await client.post("/vods/600/cancel", headers=role_headers["operator"])
    assert idle.status_code == 204  # no job at all
    job_id = await vod_jobs(runtime).enqueue("600")
    response = await client.post("/vods/600/cancel", headers=role_headers["operator"])
    assert response.status_code == 202
    body = response.json()
    assert body["vod_id"] == "600" and body["job_id"] == job_id
    assert [t["status"] for t in body["tasks"]] == [states.CANCELLED]
    again = await client.post("/vods/600/cancel", headers=role_headers["operator"])
    assert again.status_code == 204  # nothing left to stop
    # A running task is asked to stop (the worker cancels the handler and its yt-dlp).
    await add_vod(engine, "601")
    running_job = await vod_jobs(runtime).enqueue("601")
    async with engine.begin() as conn:
        await conn.execute(update(tasks).where(tasks.c.job_id == running_job).values(status=states.RUNNING))
    running = await client.post("/vods/601/cancel", headers=role_headers["operator"])
    assert running.status_code == 202 and running.json()["tasks"][0]["status"] == "cancelling"
    async with engine.connect() as conn:
        flagged = (await conn.execute(select(tasks.c.cancel_requested).where(tasks.c.job_id == running_job))).scalar()
    assert flagged is True


async def test_description_get_put_patch(client, engine, role_headers):
    await add_vod(engine, "700")
    assert (await client.get("/vods/700/description")).json() == {"vod_id": "700", "description": ""}
    operator = role_headers["operator"]
    put = await client.put("/vods/700/description", json={"description": "  Highlights inside  "}, headers=operator)
    assert put.status_code == 204
    assert (await client.get("/vods/700/description")).json()["description"] == "Highlights inside"
    patch = await client.patch("/vods/700/description", json={"description": "second"}, headers=operator)
    assert patch.status_code == 204
    assert (await client.get("/vods/700")).json()["description"] == "second"
    for bad_body, message in (
        ({"description": 5}, "string"),
        ({"description": "x" * 4001}, "limit"),
        ([1, 2], "object"),
    ):
        bad = await client.put("/vods/700/description", json=bad_body, headers=operator)
        assert bad.status_code == 400 and message in bad.json()["error"]
    not_json = await client.put("/vods/700/description", content=b"{oops", headers=operator)
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]

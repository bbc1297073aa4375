"""The live monitor keeps a live stream transcoded: a live transcode that ended for good while
its stream is live (failed, dead, cancelled) is replaced, after a growing backoff and at most
LIVE_TRANSCODE_REVIVALS times a session; once the stream is not live, nothing is replaced.

The first test runs the real transcode handler on a worker (no ingest: the stream's profile is
unknown, so every run fails permanently before it reads anything) and drives the monitor's step
the way each reading does; the second one cancels the running transcode of a real publish and
sees the monitor of `reelhouse serve` bring the HLS back."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from reelhouse.core.db.models import tasks
from reelhouse.core.jobs import states
from reelhouse.core.jobs.control import request_cancel
from reelhouse.live import keys, kinds, metrics
from reelhouse.live.lifecycle import go_live, go_offline
from reelhouse.live.models import streams
from reelhouse.live.monitor import GIVEN_UP, MonitorState, keep_transcoding

from .conftest import create_stream, publish, publish_url, run_worker, wait_until

REVIVALS = 2
BACKOFF = 0.3


async def transcodes(engine, job_id: int) -> list:
    async with engine.connect() as conn:
        query = select(tasks).where(tasks.c.job_id == job_id, tasks.c.kind == kinds.KIND_TRANSCODE).order_by(tasks.c.id)
        return list((await conn.execute(query)).all())


async def new_live_stream(services, title: str) -> dict:
    key = keys.new_publish_key()
    row = await services.store.create_stream(
        {"user_id": None, "title": title, "playback_id": keys.new_playback_id(), "key_hash": keys.key_hash(key),
         "key_hint": keys.key_hint(key), "profile": "hls-default", "record": False}
    )  # fmt: skip
    async with services.store.tx() as conn:
        await go_live(services, conn, row, f"client-{row['id']}")
    return await services.store.get_stream(int(row["id"]))


def counted(counter, *labels: str) -> float:
    return (counter.labels(*labels) if labels else counter)._value.get()


async def test_a_failed_live_transcode_is_replaced_with_backoff_up_to_the_limit(domain, runtime):
    services = domain.services
    services.settings = services.settings.model_copy(
        update={"transcode_revivals": REVIVALS, "transcode_revive_backoff": timedelta(seconds=BACKOFF)}
    )
    stream = await new_live_stream(services, "doomed")
    async with runtime.engine.begin() as conn:  # every run of the handler fails permanently
        await conn.execute(update(streams).where(streams.c.id == stream["id"]).values(profile="no-such-profile"))
    state = MonitorState()
    revived_before = counted(metrics.TRANSCODE_REVIVED, "failed")
    given_up_before = counted(metrics.TRANSCODE_GIVEN_UP)
    first = await keep_transcoding(services, stream, state)
    assert first == {"transcode": "queued", "transcode_revivals": 0}  # nothing to replace yet

    async with run_worker(runtime, "monitor-test-worker", (kinds.KIND_TRANSCODE, kinds.KIND_FINALIZE)):

        async def settled():
            standing = await keep_transcoding(services, stream, state)  # what each reading does
            return standing if standing["transcode"] == GIVEN_UP else None

        standing = await wait_until(settled, 60, "the monitor to give up")
        for _ in range(3):  # further readings change nothing, and say so once
            assert await keep_transcoding(services, stream, state) == standing
        rows = await transcodes(runtime.engine, stream["job_id"])

        # The publisher stops: one closing run hands the session to live.finalize (it finds the
        # stream ended and never starts ffmpeg), or the recording would never become a VOD.
        async with services.store.tx() as conn:
            await go_offline(services, conn, int(stream["id"]))

        async def finalized():
            recording = await services.store.recording(int(stream["id"]), int(stream["session"]))
            return recording if recording["state"] == "empty" else None  # record=False: nothing kept

        await wait_until(finalized, 30, "the session's finalize")

    assert standing == {"transcode": GIVEN_UP, "transcode_revivals": REVIVALS}
    assert [r.status for r in rows] == [states.FAILED] * (1 + REVIVALS)
    assert all("no-such-profile" in (r.last_error or "") for r in rows)
    assert [r.payload.get("revival") for r in rows] == [None, 1, 2]
    assert {r.required_capability for r in rows} == {kinds.TRANSCODE_CAPABILITY}
    # The replacements waited BACKOFF, then twice that.
    waits = [(r.run_after - r.created_at).total_seconds() for r in rows[1:]]
    assert waits == pytest.approx([BACKOFF, 2 * BACKOFF], abs=0.05)
    assert counted(metrics.TRANSCODE_REVIVED, "failed") - revived_before == REVIVALS
    assert counted(metrics.TRANSCODE_GIVEN_UP) - given_up_before == 1
    closing = (await transcodes(runtime.engine, stream["job_id"]))[-1]
    assert closing.payload.get("closing") and closing.status == states.SUCCEEDED


async def test_nothing_is_replaced_once_the_stream_is_not_live(domain, runtime):
    services = domain.services
    stream = await new_live_stream(services, "ended")
    [task] = await transcodes(runtime.engine, stream["job_id"])
    assert (await request_cancel(runtime.engine, task.id)).status == states.CANCELLED
    async with services.store.tx() as conn:
        await go_offline(services, conn, int(stream["id"]))
    after_end = [(r.id, r.status) for r in await transcodes(runtime.engine, stream["job_id"])]
    assert [status for _, status in after_end] == [states.CANCELLED, states.QUEUED]  # the closing run only
    # The row read before the stream ended (a reading racing the end) replaces nothing.
    await keep_transcoding(services, stream, MonitorState())
    assert [(r.id, r.status) for r in await transcodes(runtime.engine, stream["job_id"])] == after_end
    assert stream["id"] not in {s["id"] for s in await services.store.live_streams()}


@pytest.mark.slow
async def test_a_cancelled_live_transcode_is_replaced_and_the_hls_continues(client, domain, runtime, server):
    stream = await create_stream(client, record=False)
    base = f"/v1/streams/{stream['id']}/live"
    publisher = await publish(publish_url(domain, stream["publish_key"]), 40)
    try:
        async with run_worker(runtime, "monitor-live-worker"):

            async def variant_playlist():
                response = await client.get(f"{base}/master.m3u8")
                if response.status_code != 200:
                    return None
                variant = next(line for line in response.text.splitlines() if line and not line.startswith("#"))
                playlist = await client.get(f"{base}/{variant}")
                return (variant, playlist.text) if playlist.status_code == 200 and "#EXTINF" in playlist.text else None

            variant, _ = await wait_until(variant_playlist, 30, "the live playlist")
            job_id = (await client.get(f"/v1/streams/{stream['id']}")).json()["job_id"]
            [first] = await transcodes(runtime.engine, job_id)
            assert (await client.post(f"/v1/tasks/{first.id}/cancel")).status_code in (200, 202)

            async def replaced():
                rows = await transcodes(runtime.engine, job_id)
                return rows if len(rows) == 2 and rows[0].status == states.CANCELLED else None

            rows = await wait_until(replaced, 30, "the monitor to replace the cancelled transcode", interval=0.2)

            async def resumed():
                text = (await client.get(f"{base}/{variant}")).text
                if "#EXT-X-DISCONTINUITY\n" not in text:
                    return None
                return text if text.split("#EXT-X-DISCONTINUITY\n", 1)[1].count("#EXTINF") >= 2 else None

            await wait_until(resumed, 40, "the playlist to continue after the replacement", interval=0.5)
            telemetry = (await client.get(f"/v1/streams/{stream['id']}")).json()["telemetry"]
            assert telemetry["transcode_revivals"] == 1 and telemetry["transcode"] == states.RUNNING
            page = await client.get(f"/live/streams/{stream['id']}")
            assert page.status_code == 200 and "running · replaced 1×" in page.text
            assert (await transcodes(runtime.engine, job_id))[1].status == states.RUNNING
            assert 'reelhouse_live_transcode_revived_total{status="cancelled"}' in (await client.get("/metrics")).text
            await publisher.stop()

            async def offline():
                return not (await client.get(f"/v1/streams/{stream['id']}")).json()["is_live"]

            await wait_until(offline, 20, "the stream to end")
            polls = domain.monitor.polls

            async def read_thrice():
                return domain.monitor.polls >= polls + 3

            await wait_until(read_thrice, 10, "three more monitor readings")
            after = await transcodes(runtime.engine, job_id)
            assert [r.id for r in after] == [r.id for r in rows]  # nothing replaced after the end
    finally:
        await publisher.stop()
        await asyncio.sleep(0)

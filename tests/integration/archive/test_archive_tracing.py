"""One archived VOD is one trace: the discovery task's span, the download task's `processOnce`
with `download` inside, and the upload task's `upload`, exported to a real OTLP/HTTP receiver
(built on opentelemetry-proto), linked parent to child through the trace context stored with each
task, all with the correlation id that the worker's log lines carry as `corr`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.otlp_receiver import otlp_receiver

from .conftest import apply_env, store_youtube_token


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_one_vod_is_one_trace_with_the_log_correlation_id(
    make_runtime, monkeypatch, archive_env, twitch, youtube, origin, tiny_clip
):
    twitch.add_channel("streamer")
    (video,) = twitch.add_archives("streamer", 1)
    origin.add_vod(video["id"], tiny_clip)
    apply_env(monkeypatch, archive_env, TWITCH_CHANNEL="streamer", VOD_DISCOVERY_LIMIT="5")
    runtime = make_runtime()
    from reelhouse.core.db.migrate import run_migrations

    await run_migrations(runtime.engine)
    await store_youtube_token(runtime, youtube)
    with otlp_receiver() as receiver:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(Path(__file__).with_name("traced_worker.py")), "streamer"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert not receiver.rejected

    (discovery,) = [s for s in receiver.named("discovery") if s.attributes.get("discovery.jobs_created")]
    (process,) = receiver.named("processOnce")
    (download,) = receiver.named("download")
    (upload,) = receiver.named("upload")
    trace_id = discovery.trace_id
    assert {s.trace_id for s in (process, download, upload)} == {trace_id}, "one trace from discovery to upload"
    by_id = {s.span_id: s for s in receiver.spans if s.trace_id == trace_id}

    def ancestors(span):
        chain = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            chain.append(span.name)
        return chain

    assert ancestors(download)[0] == "processOnce"
    assert ancestors(process) == ["task vod.download", "discovery", "task vod.discover"]
    assert ancestors(upload)[:3] == ["task vod.upload", "processOnce", "task vod.download"]
    assert ancestors(upload)[-1] == "task vod.discover"

    assert process.attributes["vod.id"] == video["id"] and process.attributes["vod.title"] == video["title"]
    assert process.attributes["circuit.state"] == "closed" and process.attributes["queue_depth"] >= 1
    assert download.attributes["download.duration_ms"] >= 0 and download.attributes["download.path"].endswith(".mp4")
    assert upload.attributes["upload.youtube_url"].startswith("https://www.youtube.com/watch?v=")
    assert upload.attributes["upload.path"] == download.attributes["download.path"]
    assert upload.attributes["upload.duration_ms"] >= 0

    spans = [discovery, process, download, upload, *by_id.values()]
    correlation = {s.attributes.get("correlation_id") for s in spans}
    assert len(correlation) == 1 and None not in correlation, correlation
    (corr,) = correlation
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    logged = [r for r in records if r.get("vod_id") == video["id"]]
    assert {r.get("component") for r in logged} >= {"vod_download", "vod_upload"}
    assert {r.get("corr") for r in logged} == {corr}, "the logs carry the spans' correlation id"

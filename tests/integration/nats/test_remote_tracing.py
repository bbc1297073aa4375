"""A remote encode's trace continues on the NATS worker (issue 17): the kernel puts the task's
stored trace context in the work message's `traceparent` header, and a `reelhouse worker` in
NATS mode continues it for its `task encode.transcode` span and the handler's `encode` span,
exported to a real OTLP receiver. (The payload is empty: the run fails fast, spans still end.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from reelhouse.core.jobs import states
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.encode.pipeline import KIND_TRANSCODE
from tests.integration.nats.conftest import wait_until
from tests.integration.nats.test_remote_workers import task_row
from tests.otlp_receiver import otlp_receiver

pytestmark = pytest.mark.slow


async def test_enqueuers_trace_continues_on_a_nats_worker(pg_engine, kernel_factory, nats_url, nats_env, tmp_path):
    async def never(_ctx):
        raise AssertionError("the transcode runs on the NATS worker")

    registry = TaskRegistry()
    registry.register(TaskKind(KIND_TRANSCODE, never, remote=True, max_attempts=1))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DB_DSN", "ADMIN_TOKEN")}
    with otlp_receiver() as receiver:
        env.update(
            nats_env,
            NATS_URL=nats_url,
            WORKER_ID="w-trace",
            DATA_DIR=str(tmp_path / "worker"),
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        )
        # The kernel side's tracer is local to this test (no global provider in pytest).
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")))
        queue = TaskQueue(pg_engine)
        async with kernel_factory(pg_engine, registry=registry):
            proc = subprocess.Popen(
                [sys.executable, "-m", "reelhouse.cli", "worker"], env=env, stderr=subprocess.PIPE, text=True
            )
            try:
                with provider.get_tracer("test").start_as_current_span("enqueue"):
                    handle = await queue.enqueue(KIND_TRANSCODE, {}, max_attempts=1)

                async def settled() -> bool:
                    return (await task_row(pg_engine, handle.task_id))["status"] in states.TASK_FINAL

                await wait_until(settled, 90, "the NATS worker runs the transcode")
            finally:
                proc.terminate()  # SIGTERM: the worker flushes its spans before exiting
                _out, err = proc.communicate(timeout=30)
        provider.shutdown()
        assert proc.returncode == 0, err[-3000:]
        (enqueue,) = receiver.named("enqueue")
        (run,) = receiver.named(f"task {KIND_TRANSCODE}")
        (encode,) = receiver.named("encode")
    assert run.trace_id == enqueue.trace_id == encode.trace_id
    assert run.parent_span_id == enqueue.span_id and encode.parent_span_id == run.span_id
    assert run.attributes["reelhouse.task_id"] == encode.attributes["encode.task_id"] == handle.task_id
    assert run.attributes["reelhouse.worker_id"] == "w-trace"
    assert run.attributes["reelhouse.outcome"] == "failed"

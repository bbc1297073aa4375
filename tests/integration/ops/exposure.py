"""What a running reelhouse exposes on /metrics, for checking alert and dashboard queries.

`scrape_exposed()` builds the app with every domain, exercises it (HTTP requests, one task run,
one breaker failure, a checked-out pool connection), scrapes /metrics and returns each series
name the exposition declares with the label names its collector carries. A metric renamed or
dropped in the code disappears from this map, so a query that still names it fails its test.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime

# Series Prometheus itself writes for every target (not reelhouse's to expose).
PROMETHEUS_SERIES = {"up": {"job", "instance"}, "scrape_duration_seconds": {"job", "instance"}}
# Labels every scraped series carries (target labels from prometheus.yml).
TARGET_LABELS = {"job", "instance", "role"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


@dataclass
class Exposed:
    series: dict[str, set[str]] = field(default_factory=dict)  # series name -> label names
    body: str = ""

    def labels_of(self, name: str) -> set[str]:
        if name in PROMETHEUS_SERIES:
            return PROMETHEUS_SERIES[name] | TARGET_LABELS
        return self.series[name] | TARGET_LABELS

    def knows(self, name: str) -> bool:
        return name in self.series or name in PROMETHEUS_SERIES


def _collector_labels(series_name: str) -> set[str]:
    collector = REGISTRY._names_to_collectors.get(series_name)
    return set(getattr(collector, "_labelnames", ()) or ())


def parse_exposition(body: str) -> Exposed:
    exposed = Exposed(body=body)
    for family in text_string_to_metric_families(body):
        for suffix in SUFFIXES.get(family.type, ("",)):
            name = family.name + suffix
            labels = {label for sample in family.samples if sample.name == name for label in sample.labels}
            labels |= _collector_labels(name)
            if family.type == "histogram" and suffix == "_bucket":
                labels.add("le")
            exposed.series[name] = labels
    return exposed


async def _exercise_and_scrape(settings: Settings) -> str:
    runtime = build_runtime(settings)
    done = asyncio.Event()

    async def probe(ctx) -> None:
        done.set()

    runtime.registry.register(TaskKind("ops.probe", probe))
    await TaskQueue(runtime.engine).enqueue("ops.probe")
    worker = Worker(runtime.engine, runtime.registry, WorkerOptions(poll_interval=0.05, kinds=["ops.probe"]))
    run = asyncio.create_task(worker.run())
    async with asyncio.timeout(60):
        await done.wait()
    worker.request_stop()
    await run
    await runtime.breaker.record_failure("ops_channel")
    app = create_app(settings, runtime=runtime, background=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for path in ("/healthz", "/readyz", "/status", "/v1/workers", "/no-such-page"):
            await client.get(path)
        async with runtime.engine.connect():
            body = (await client.get("/metrics")).text
    await runtime.aclose()
    return body


def scrape_exposed(monkeypatch, db_url: str, tmp_path) -> Exposed:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    body = asyncio.run(_exercise_and_scrape(Settings()))
    return parse_exposition(body)


@dataclass
class QueryRefs:
    selectors: list[tuple[str, set[str]]] = field(default_factory=list)  # metric, matcher labels
    grouping: set[str] = field(default_factory=set)  # by/without/on/ignoring labels


def query_refs(query: str) -> QueryRefs:
    """The metrics and labels one PromQL expression names (raises on a parse error)."""
    import promql_parser as pq

    refs = QueryRefs()

    def walk(node) -> None:
        if isinstance(node, pq.VectorSelector):
            matchers = node.matchers.matchers if node.matchers else []
            labels = {m.name for m in matchers if m.name != "__name__"}
            refs.selectors.append((node.name, labels))
        elif isinstance(node, pq.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, pq.AggregateExpr):
            if node.modifier is not None:
                refs.grouping |= set(node.modifier.labels)
            walk(node.expr)
            if node.param is not None:
                walk(node.param)
        elif isinstance(node, pq.BinaryExpr):
            matching = node.modifier.matching if node.modifier is not None else None
            if matching is not None:
                refs.grouping |= set(matching.labels)
            if node.modifier is not None and node.modifier.group_labels:
                refs.grouping |= set(node.modifier.group_labels)
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, pq.Call):
            for arg in node.args:
                walk(arg)
        elif isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
            walk(node.expr)
        elif not isinstance(node, pq.NumberLiteral | pq.StringLiteral):
            raise TypeError(f"unhandled PromQL node {type(node).__name__} in {query!r}")

    walk(pq.parse(query))
    return refs


def unknown_references(query: str, exposed: Exposed) -> list[str]:
    """What `query` names that reelhouse does not expose: metrics, and labels that none of the
    query's metrics carries (a typo in `by (chanel)` or a matcher on a dropped label)."""
    refs = query_refs(query)
    problems = []
    if not refs.selectors:
        problems.append(f"{query!r} reads no metric")
    known_labels: set[str] = set()
    for name, labels in refs.selectors:
        if not exposed.knows(name):
            problems.append(f"metric {name}")
            continue
        carried = exposed.labels_of(name)
        known_labels |= carried
        problems += [f"label {label} on {name}" for label in sorted(labels - carried)]
    problems += [f"label {label} (grouping)" for label in sorted(refs.grouping - known_labels - {"le"})]
    return problems

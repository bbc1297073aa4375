"""deploy/grafana: every panel query and template variable of reelhouse.json parses as PromQL
and reads metrics and labels a running reelhouse exposes; each domain has its panels; seed
003's PromQL examples are among them; provisioning points at the dashboard and datasource."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.integration.ops.exposure import query_refs, scrape_exposed, unknown_references

GRAFANA = Path(__file__).resolve().parents[3] / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "reelhouse.json").read_text())

# Seed 003's "PromQL Query Examples" and dashboard panel queries, verbatim.
SEED_QUERIES = [
    "histogram_quantile(0.95, rate(vod_download_duration_seconds_bucket[1h]))",
    "histogram_quantile(0.50, rate(vod_upload_duration_seconds_bucket[1h]))",
    "histogram_quantile(0.99, rate(vod_processing_total_duration_seconds_bucket[1h]))",
    "rate(vod_download_duration_seconds_sum[5m]) / rate(vod_download_duration_seconds_count[5m])",
    "rate(vod_upload_duration_seconds_sum[1h]) / rate(vod_upload_duration_seconds_count[1h])",
    "rate(vod_processing_total_duration_seconds_sum[30m]) / rate(vod_processing_total_duration_seconds_count[30m])",
    'sum(rate(vod_download_duration_seconds_bucket{le="600"}[1h])) / '
    'sum(rate(vod_download_duration_seconds_bucket{le="+Inf"}[1h])) * 100',
    'sum(rate(vod_upload_duration_seconds_bucket{le="120"}[1h])) / '
    'sum(rate(vod_upload_duration_seconds_bucket{le="+Inf"}[1h])) * 100',
    "histogram_quantile(0.95, rate(vod_download_duration_seconds_bucket[1h] offset 1h))",
    "rate(vod_upload_duration_seconds_count[5m]) * 60",
    "rate(vod_downloads_started_total[1h]) * 3600",
    "rate(vod_uploads_succeeded_total[5m]) * 60",
    "rate(vod_processing_cycles_total[1h]) * 3600",
    "sum(rate(vod_downloads_succeeded_total[5m])) / sum(rate(vod_downloads_started_total[5m])) * 100",
    "sum(rate(vod_uploads_succeeded_total[5m])) / (sum(rate(vod_uploads_succeeded_total[5m])) + "
    "sum(rate(vod_uploads_failed_total[5m]))) * 100",
    'rate(vod_processing_step_duration_seconds_sum{step=~"$step"}[30m]) / '
    'rate(vod_processing_step_duration_seconds_count{step=~"$step"}[30m])',
]
# Seed 003's ten panels, by title.
SEED_PANELS = {
    "VOD Queue Depth",
    "Circuit Breaker State",
    "Download Rate",
    "Download Duration Percentiles",
    "Upload Rate",
    "Upload Duration Percentiles",
    "Database Connection Pool",
    "Chat Messages Recorded Rate",
    "OAuth Token Refresh Rate",
    "Helix API Call Rate",
}
DOMAIN_ROWS = {"Archive", "Chat", "Providers", "Encode", "Vault", "Platform"}
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)[^}]*\}")
LABEL_VALUES = re.compile(r"^label_values\((?P<query>.+),\s*(?P<label>\w+)\)$")


def panels(container: dict) -> list[dict]:
    found = []
    for panel in container.get("panels", []):
        found.append(panel)
        found += panels(panel)
    return found


def expand(expr: str) -> str:
    """Grafana's variables replaced by values a real request would carry."""
    values = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
    return VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), ".*"), expr)


def queries() -> list[tuple[str, str]]:
    found = [
        (panel["title"], target["expr"])
        for panel in panels(DASHBOARD)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in DASHBOARD["templating"]["list"]:
        match = LABEL_VALUES.match(variable["query"]["query"])
        assert match, f"variable {variable['name']}: unexpected query {variable['query']}"
        found.append((f"${variable['name']}", f"count by ({match['label']}) ({match['query']})"))
    return found


def test_dashboard_shape():
    every = panels(DASHBOARD)
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = {panel["title"] for panel in every}
    assert titles >= SEED_PANELS, SEED_PANELS - titles
    rows = {panel["title"].split(" ")[0] for panel in every if panel["type"] == "row"}
    assert rows >= DOMAIN_ROWS, DOMAIN_ROWS - rows
    for panel in every:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "prometheus", panel["title"]
    expressions = {expr for _, expr in queries()}
    missing = [query for query in SEED_QUERIES if query not in expressions]
    assert missing == [], missing


def test_every_query_parses():
    for title, expr in queries():
        try:
            query_refs(expand(expr))
        except (ValueError, TypeError) as exc:
            raise AssertionError(f"{title}: {expr!r} does not parse: {exc}") from exc


def test_every_query_reads_what_reelhouse_exposes(db_url, tmp_path, monkeypatch):
    exposed = scrape_exposed(monkeypatch, db_url, tmp_path)
    problems = {f"{title}: {expr}": unknown_references(expand(expr), exposed) for title, expr in queries()}
    assert {query: found for query, found in problems.items() if found} == {}


def test_provisioning_points_at_the_dashboard_and_datasource():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    assert [ds["uid"] for ds in datasources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "reelhouse.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    compose = yaml.safe_load((GRAFANA.parent / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.startswith("./grafana/reelhouse.json:") and m.split(":")[1].startswith(path) for m in mounts), mounts
    assert any(m.startswith("./grafana/provisioning:/etc/grafana/provisioning") for m in mounts), mounts

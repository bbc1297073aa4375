"""deploy/prometheus: the alert rules and the scrape config pass promtool, every alert has a
firing and a silent unit test, and every expression reads metrics and labels that a running
reelhouse exposes (on SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.ops.exposure import parse_exposition, query_refs, scrape_exposed, unknown_references

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
ALERTS = DEPLOY / "alerts.yml"

# Seed 003's alerts, seed 002's three, and the vault's (stuck release, mail, check-ins).
REQUIRED_ALERTS = {
    "HighDownloadFailureRate",
    "CircuitBreakerOpen",
    "HighVODQueueDepth",
    "DatabaseConnectionPoolExhausted",
    "VODProcessingStalled",
    "OAuthTokenRefreshFailures",
    "HighChatReconnectionRate",
    "SlowVODDownloads",
    "NoHealthyWorkers",
    "JobQueueBacklog",
    "HighErrorRate",
    "VaultReleaseStuck",
    "VaultEmailFailureRate",
    "VaultEmailsNeedDecision",
    "VaultCheckinsMissed",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool (Debian package prometheus) is required; `make system-deps` installs it")
    return found


def run_promtool(*args: str) -> str:
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=DEPLOY, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_rules_and_config():
    assert "SUCCESS" in run_promtool("check", "rules", "alerts.yml")
    out = run_promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out and "alerts.yml" in out  # the config loads the rule file


def test_promtool_unit_tests_pass_and_cover_every_alert_both_ways():
    assert "SUCCESS" in run_promtool("test", "rules", "alerts_test.yml")
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= REQUIRED_ALERTS, REQUIRED_ALERTS - names
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert firing == names, f"no firing test: {names - firing}"
    assert silent == names, f"no silent test: {names - silent}"


def test_a_misspelt_metric_is_caught():
    exposed = parse_exposition(
        '# HELP vod_queue_depth q\n# TYPE vod_queue_depth gauge\nvod_queue_depth{channel="a"} 1.0\n'
    )
    assert unknown_references("sum by (channel) (vod_queue_depth) > 50", exposed) == []
    assert unknown_references("vod_queue_dept > 50", exposed) == ["metric vod_queue_dept"]
    assert unknown_references("sum by (chanel) (vod_queue_depth)", exposed) == ["label chanel (grouping)"]
    assert unknown_references('vod_queue_depth{state="x"}', exposed) == ["label state on vod_queue_depth"]
    with pytest.raises(ValueError):
        query_refs("sum(rate(vod_queue_depth[5m])")


def test_every_alert_reads_what_reelhouse_exposes(db_url, tmp_path, monkeypatch):
    exposed = scrape_exposed(monkeypatch, db_url, tmp_path)
    problems = {rule["alert"]: unknown_references(rule["expr"], exposed) for rule in alert_rules()}
    assert {name: found for name, found in problems.items() if found} == {}
    # The alerts' own metrics have samples after the exercise (not only HELP lines).
    for line in ("database_connection_pool_size ", "database_connection_pool_in_use ", "reelhouse_workers_healthy "):
        assert any(row.startswith(line) for row in exposed.body.splitlines()), line

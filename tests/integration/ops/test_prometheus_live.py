"""A real Prometheus (Debian's `prometheus`, the same package as promtool) scrapes a running
`reelhouse serve` with deploy/prometheus's config and rules: the target is up, every rule
evaluates without error, no alert fires on an idle healthy instance but the ones that should,
and every dashboard query runs on the real engine, finding the series reelhouse exposes."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.ops.exposure import parse_exposition, query_refs
from tests.integration.ops.test_grafana import expand, queries
from tests.integration.security.server_process import free_port, reelhouse_server

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"


def wait_for(check, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
            if found:
                return found
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.mark.slow
def test_prometheus_scrapes_reelhouse_and_runs_the_rules_and_dashboard(tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus (Debian package prometheus) is required; `make system-deps` installs it")
    with reelhouse_server({"DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": ""}, tmp_path / "serve.log") as server:
        target = server.base_url.removeprefix("http://")
        for path in ("/status", "/readyz", "/v1/workers", "/no-such-page"):
            httpx.get(server.base_url + path, timeout=10)
        # deploy/prometheus as shipped, with the target on loopback and quick intervals.
        config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] == "reelhouse"]
        config["scrape_configs"][0]["static_configs"][0]["targets"] = [target]
        rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
        config["rule_files"] = [str(tmp_path / "alerts.yml")]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        api = f"http://127.0.0.1:{port}/api/v1"
        with (tmp_path / "prometheus.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:

            def query(expr: str) -> list:
                body = httpx.get(f"{api}/query", params={"query": expr}, timeout=10).json()
                assert body["status"] == "success", (expr, body)
                return body["data"]["result"]

            def up() -> bool:
                return [s["value"][1] for s in query('up{job="reelhouse"}')] == ["1"]

            ready = f"http://127.0.0.1:{port}/-/ready"
            wait_for(lambda: httpx.get(ready, timeout=5).status_code == 200, "Prometheus to be ready")
            wait_for(up, "the reelhouse target to be up")
            # A few scrapes, so rate() windows have two samples.
            wait_for(lambda: query('count_over_time(up{job="reelhouse"}[1m]) >= 4'), "four scrapes")

            def evaluated() -> list | None:
                groups = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
                found = [rule for group in groups for rule in group["rules"]]
                return found if all(rule.get("lastEvaluation", "").startswith("20") for rule in found) else None

            rules_seen = wait_for(evaluated, "every rule to be evaluated")
            assert len(rules_seen) == sum(len(g["rules"]) for g in rules["groups"])
            assert [r["name"] for r in rules_seen if r["health"] != "ok"] == []
            # Idle and healthy: no worker runs (EMBEDDED_WORKER=false), so NoHealthyWorkers and
            # NoEncodeWorkers are pending, and a new instance has no backup nor restore test yet;
            # nothing else is.
            active = {r["name"] for r in rules_seen if r["state"] != "inactive"}
            assert active == {"NoHealthyWorkers", "NoEncodeWorkers", "BackupMissing", "BackupRestoreTestStale"}

            body = httpx.get(f"{server.base_url}/metrics", timeout=10).text
            sampled = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line and line[0] != "#"}
            exposed = parse_exposition(body)
            for title, expr in queries():
                query(expand(expr))  # runs on the real engine
                for name, _labels in query_refs(expand(expr)).selectors:
                    assert exposed.knows(name), (title, name)
                    if name in sampled:  # what reelhouse has samples for, Prometheus stored
                        # Over a window: on a loaded machine the last 1 s scrape may have timed
                        # out, which marks every series stale for an instant query.
                        stored = f'count(last_over_time({{__name__="{name}",job="reelhouse"}}[5m]))'
                        assert query(stored), (title, name)
        finally:
            process.terminate()
            process.wait(30)

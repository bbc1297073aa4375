"""Plugins: built-ins, entry points and PLUGIN_DIR packages register the same way; an
incompatible API version is refused with seed 002's message; enable/disable is honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

PLUGIN_CODE = """
MANIFEST = None


class Publisher:
    def describe(self):
        return "dropped-in publisher"
"""


@pytest.fixture(autouse=True)
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "plugins"
    good = root / "publisher-example"
    good.mkdir(parents=True)
    (good / "plugin.toml").write_text(
        '[plugin]\nid = "publisher-example"\ntype = "publisher"\nversion = "1.2.0"\napi_version = 1\n'
        'entry = "example_publisher:Publisher"\n'
    )
    (good / "example_publisher.py").write_text(PLUGIN_CODE)
    old = root / "publisher-old"
    old.mkdir()
    (old / "plugin.toml").write_text(
        '[plugin]\nid = "publisher-old"\ntype = "publisher"\nversion = "0.9"\napi_version = 0\n'
    )
    bad = root / "broken"
    bad.mkdir()
    (bad / "plugin.toml").write_text("this is not toml [")
    monkeypatch.setenv("PLUGIN_DIR", str(root))
    return root


async def test_plugins_are_listed_refused_and_toggled(client, runtime):
    listed = {p["id"]: p for p in (await client.get("/v1/plugins")).json()}
    assert {"storage-fs", "storage-s3", "encoder-ffmpeg", "auth-tokens"} <= set(listed)
    assert listed["encoder-ffmpeg"]["source"] == "builtin" and listed["encoder-ffmpeg"]["health"] == "healthy"

    example = listed["publisher-example"]
    assert (example["type"], example["version"], example["source"], example["is_enabled"]) == (
        "publisher",
        "1.2.0",
        "plugin-dir",
        True,
    )
    from reelhouse.encode.services import EncodeServices

    loaded = runtime.component(EncodeServices).plugins.registry.get("publisher-example").obj
    assert loaded().describe() == "dropped-in publisher"

    old = listed["publisher-old"]
    assert old["health"] == "failed" and old["is_enabled"] is False
    assert old["error"].startswith("Incompatible API version")
    assert (await client.post("/v1/plugins/publisher-old/enable")).status_code == 409
    assert listed["broken"]["health"] == "failed" and "plugin.toml" in listed["broken"]["error"]

    assert (await client.put("/v1/plugins/publisher-example", json={"config": {"a": 1}, "priority": 5})).json() == {
        "status": "updated"
    }
    got = (await client.get("/v1/plugins/publisher-example")).json()
    assert got["config"] == {"a": 1} and got["priority"] == 5

    # Disabling the only encoder is honoured: no new jobs until it is enabled again.
    assert (await client.post("/v1/plugins/encoder-ffmpeg/disable")).json() == {"status": "disabled"}
    got = (await client.get("/v1/plugins/encoder-ffmpeg")).json()
    assert got["is_enabled"] is False and got["health"] == "disabled"
    refused = await client.post("/v1/jobs", json={"source_url": "https://example.com/v.mp4"})
    assert refused.status_code == 409 and "encoder" in refused.json()["error"]
    assert (await client.post("/v1/plugins/encoder-ffmpeg/enable")).json() == {"status": "enabled"}
    assert (await client.post("/v1/jobs", json={"source_url": "https://example.com/v.mp4"})).status_code == 201
    assert (await client.get("/v1/plugins/nope")).status_code == 404
    actions = [a["action"] for a in (await client.get("/v1/audit", params={"limit": 10})).json()]
    assert "plugin.disabled" in actions and "plugin.enabled" in actions

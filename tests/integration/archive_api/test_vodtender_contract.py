"""A client written for vod-tender's published OpenAPI gets responses that conform to it: every
documented status and body schema (tests/contracts/vodtender.py, checked against the published
file when it is beside the checkout), validated with a JSON Schema validator on real responses
(VODs with and without dates and titles, failed downloads, chat, actions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.contracts.vodtender import OPERATIONS
from tests.integration.archive_api.conftest import BASE_DATE, add_vod, admin, days

# The published file, when it sits beside this checkout (it does in the development tree).
PUBLISHED = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "vodtender-openapi.yaml"


class Contract:
    def check(self, path: str, method: str, response: Any) -> None:
        documented = OPERATIONS[(path, method)]
        status = str(response.status_code)
        assert status in documented, f"{method.upper()} {path}: {status} is not documented ({sorted(documented)})"
        schema = documented[status]
        if schema is not None:
            jsonschema.validate(response.json(), schema)


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract()


def _json_schema(node: Any, defs: dict[str, Any]) -> Any:
    """The published OpenAPI 3.0 schema as JSON Schema: `nullable` as a type union, $refs
    inlined; `format` and `default` dropped (the transcription keeps formats, compared apart)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _json_schema(defs[node["$ref"].rsplit("/", 1)[1]], defs)
        out = {k: _json_schema(v, defs) for k, v in node.items() if k not in ("nullable", "format", "default")}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        return out
    if isinstance(node, list):
        return [_json_schema(v, defs) for v in node]
    return node


def _strip_formats(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_formats(v) for k, v in node.items() if k != "format"}
    if isinstance(node, list):
        return [_strip_formats(v) for v in node]
    return node


def test_the_transcribed_contract_matches_the_published_spec():
    if not PUBLISHED.is_file():
        pytest.skip(f"vod-tender's OpenAPI is not beside this checkout ({PUBLISHED})")
    spec = yaml.safe_load(PUBLISHED.read_text())
    defs = spec["components"]["schemas"]
    for (path, method), statuses in OPERATIONS.items():
        published = spec["paths"][path][method]["responses"]
        assert set(statuses) == set(published), (path, method)
        for status, schema in statuses.items():
            content = published[status].get("content", {}).get("application/json")
            expected = _json_schema(content["schema"], defs) if content else None
            assert (_strip_formats(schema) if schema else None) == expected, (path, method, status)


async def test_vod_reads_conform(client, engine, contract):
    await add_vod(engine, "1001", date=BASE_DATE, title="Titled", duration_seconds=3600)
    await add_vod(engine, "1002", date=None, title=None)  # discovered without metadata yet
    await add_vod(engine, "1003", date=BASE_DATE - days(1), processed=True, youtube_url="https://youtu.be/x")
    await add_vod(engine, "1004", date=BASE_DATE, download_state="failed", processed=True, processing_error="gone")
    listed = await client.get("/vods")
    contract.check("/vods", "get", listed)
    assert {item["id"] for item in listed.json()} == {"1001", "1002", "1003", "1004"}
    paged = await client.get("/vods", params={"limit": 2, "offset": 1})
    contract.check("/vods", "get", paged)
    assert len(paged.json()) == 2
    for vod_id in ("1001", "1002", "1003", "1004"):
        contract.check("/vods/{id}", "get", await client.get(f"/vods/{vod_id}"))
        contract.check("/vods/{id}/progress", "get", await client.get(f"/vods/{vod_id}/progress"))
    contract.check("/vods/{id}", "get", await client.get("/vods/9999"))
    contract.check("/vods/{id}/progress", "get", await client.get("/vods/9999/progress"))
    failed = (await client.get("/vods/1004/progress")).json()
    assert failed["percent"] == 0 and failed["processed"] is True, "a failure is not 100 % done"


async def test_chat_conforms_and_an_unknown_vod_has_no_chat(client, engine, contract, runtime):
    from reelhouse.archive.chat.writer import ChatWriter
    from reelhouse.core.db.types import utcnow

    await add_vod(engine, "2001")
    async with ChatWriter(engine) as writer:
        for index, kind in enumerate(("message", "action", "clearmsg")):
            row = (
                "alpha",
                "2001",
                f"m{index}",
                kind,
                utcnow(),
                float(index),
                "u1",
                "viewer",
                "Viewer",
                f"text {index}",
                "subscriber/12",
                None,
                "#FF0000",
                0,
                None,
                None,
                None,
                None,
            )
            writer.submit(row)
    window = await client.get("/vods/2001/chat", params={"from": 0, "to": 10})
    contract.check("/vods/{id}/chat", "get", window)
    assert [m["kind"] for m in window.json()] == ["message", "action"], "chat lines only, unless asked"
    asked = await client.get("/vods/2001/chat", params=[("kind", "clearmsg")])
    assert [m["kind"] for m in asked.json()] == ["clearmsg"]
    unknown = await client.get("/vods/nope/chat")
    contract.check("/vods/{id}/chat", "get", unknown)
    assert unknown.json() == []
    stream = await client.get("/vods/2001/chat/stream", params={"from": 0, "speed": 100})
    contract.check("/vods/{id}/chat/stream", "get", stream)
    assert stream.headers["content-type"].startswith("text/event-stream") and "text 0" in stream.text


async def test_actions_and_health_conform(client, engine, contract):
    contract.check("/healthz", "get", await client.get("/healthz"))
    await add_vod(engine, "3001")
    contract.check("/vods/{id}/reprocess", "post", await client.post("/vods/3001/reprocess", headers=admin()))
    contract.check("/vods/{id}/reprocess", "post", await client.post("/vods/9999/reprocess", headers=admin()))
    contract.check("/vods/{id}/cancel", "post", await client.post("/vods/3001/cancel", headers=admin()))
    contract.check("/vods/{id}/cancel", "post", await client.post("/vods/3001/cancel", headers=admin()))

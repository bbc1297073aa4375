"""vod-tender's published API (its backend/api/openapi.yaml, shared/reference/vodtender-openapi.yaml
beside this checkout): the operations reelhouse serves, their documented statuses and response
schemas, transcribed as JSON Schema (its OpenAPI 3.0 `nullable` written as type unions), so the
contract test needs nothing outside the repository."""

from __future__ import annotations

from typing import Any

NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_INTEGER = {"type": ["integer", "null"]}
DATE_TIME = {"type": "string", "format": "date-time"}

VOD_LIST_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "date": DATE_TIME,
        "processed": {"type": "boolean"},
        "youtube_url": NULLABLE_STRING,
    },
}
VOD_DETAIL: dict[str, Any] = {
    "allOf": [
        VOD_LIST_ITEM,
        {
            "type": "object",
            "properties": {
                "duration_seconds": NULLABLE_INTEGER,
                "downloaded_path": NULLABLE_STRING,
                "download_state": NULLABLE_STRING,
                "download_retries": NULLABLE_INTEGER,
                "download_total": NULLABLE_INTEGER,
                "progress_updated_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
    ]
}
PROGRESS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "vod_id": {"type": "string"},
        "state": NULLABLE_STRING,
        "percent": {"type": ["number", "null"]},
        "retries": {"type": "integer"},
        "total_bytes": NULLABLE_INTEGER,
        "downloaded_path": NULLABLE_STRING,
        "processed": {"type": "boolean"},
        "youtube_url": NULLABLE_STRING,
        "progress_updated_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
CHAT_MESSAGE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string"},
        "message": {"type": "string"},
        "abs_timestamp": DATE_TIME,
        "rel_timestamp": {"type": "number"},
        "badges": NULLABLE_STRING,
        "emotes": NULLABLE_STRING,
        "color": NULLABLE_STRING,
    },
}

# (path, method) -> {status: JSON body schema, or None for a documented status without a body}
OPERATIONS: dict[tuple[str, str], dict[str, dict[str, Any] | None]] = {
    ("/healthz", "get"): {"200": None},
    ("/vods", "get"): {"200": {"type": "array", "items": VOD_LIST_ITEM}},
    ("/vods/{id}", "get"): {"200": VOD_DETAIL, "404": None},
    ("/vods/{id}/progress", "get"): {"200": PROGRESS, "404": None},
    ("/vods/{id}/reprocess", "post"): {"204": None, "404": None},
    ("/vods/{id}/cancel", "post"): {"202": None, "204": None},
    ("/vods/{id}/chat", "get"): {"200": {"type": "array", "items": CHAT_MESSAGE}},
    ("/vods/{id}/chat/stream", "get"): {"200": None},
}

"""WebEncode's API as its clients use it (shared/reference/webencode-api.yaml beside this
checkout), transcribed as JSON Schema for the operations the contract test exercises, with
reelhouse's deliberate differences (docs/API.md) applied and marked `DIFF`."""

from __future__ import annotations

from typing import Any

ID = {"type": "string", "minLength": 1}
TIMESTAMP = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
# DIFF: reelhouse keeps "dead" (attempts exhausted) beside WebEncode's statuses.
JOB_STATUS = {"enum": ["queued", "processing", "completed", "failed", "cancelled", "stitching", "uploading", "dead"]}

JOB: dict[str, Any] = {
    "type": "object",
    "required": ["id", "source_url", "profiles", "status", "created_at", "updated_at", "progress_pct"],
    "properties": {
        "id": ID,
        "source_url": {"type": "string"},
        "profiles": {"type": "array", "items": {"type": "string"}},
        "status": JOB_STATUS,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "progress_pct": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
        "error_message": NULLABLE_STRING,
        "started_at": NULLABLE_STRING,
        "finished_at": NULLABLE_STRING,
        "eta_seconds": {"type": ["number", "null"], "minimum": 0},
    },
}
TASK: dict[str, Any] = {
    "type": "object",
    "required": ["id", "job_id", "type", "status", "sequence_index", "created_at", "updated_at"],
    "properties": {
        "id": ID,
        "job_id": ID,
        "type": {"type": "string"},
        # DIFF: reelhouse's task states (queued, running, succeeded, ...) instead of
        # WebEncode's pending/assigned/completed; its UI draws unknown states as pending.
        "status": {"type": "string"},
        "sequence_index": {"type": "integer"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
}
JOB_DETAIL = {
    "type": "object",
    "required": ["job", "tasks"],
    "properties": {"job": JOB, "tasks": {"type": "array", "items": TASK}},
}
# DIFF: "cancelling" while running tasks stop (cancellation is asynchronous in reelhouse).
CANCEL = {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["cancelled", "cancelling"]}}}
PROFILE = {
    "type": "object",
    "required": ["id", "name", "video_codec", "is_system"],
    "properties": {
        "id": ID,
        "name": {"type": "string"},
        "video_codec": {"type": "string"},
        "width": {"type": "integer", "minimum": 0},
        "height": {"type": "integer", "minimum": 0},
        "bitrate_kbps": {"type": "integer", "minimum": 0},
        "config": {"type": ["object", "null"]},
        "is_system": {"type": "boolean"},
    },
}
PLUGIN = {
    "type": "object",
    "required": ["id", "type", "is_enabled", "priority", "health"],
    "properties": {
        "id": ID,
        "type": {"enum": ["auth", "storage", "encoder", "live", "publisher"]},
        "config": {"type": ["object", "null"]},
        "is_enabled": {"type": "boolean"},
        "priority": {"type": "integer"},
        "health": {"enum": ["healthy", "degraded", "failed", "disabled"]},
        "version": {"type": "string"},
    },
}


def _status(value: str) -> dict[str, Any]:
    return {"type": "object", "required": ["status"], "properties": {"status": {"const": value}}}


WEBHOOK = {
    "type": "object",
    "required": ["id", "url", "events", "is_active", "failure_count", "created_at"],
    "not": {"required": ["secret"]},
    "properties": {
        "id": ID,
        "user_id": NULLABLE_STRING,
        "url": {"type": "string"},
        "events": {"type": "array", "items": {"type": "string"}},
        "is_active": {"type": "boolean"},
        "failure_count": {"type": "integer", "minimum": 0},
        "last_triggered_at": NULLABLE_STRING,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
}
AUDIT = {
    "type": "object",
    "required": ["id", "action", "resource_type", "created_at"],
    "properties": {
        "id": ID,
        "user_id": NULLABLE_STRING,
        "action": {"type": "string"},
        "resource_type": {"type": "string"},
        "resource_id": NULLABLE_STRING,
        "ip_address": NULLABLE_STRING,
        "user_agent": NULLABLE_STRING,
        "created_at": TIMESTAMP,
    },
}
COUNT = {"type": "integer", "minimum": 0}
HEALTH = {
    "type": "object",
    "required": ["status", "version", "services"],
    "properties": {
        "status": {"enum": ["healthy", "degraded", "unhealthy"]},
        "version": {"type": "string"},
        "services": {
            "type": "object",
            "required": ["database", "nats", "storage"],
            "properties": {
                "database": {"type": "string"},
                "nats": {"type": "string"},
                "storage": {"type": "string"},
            },
        },
    },
}
STATS = {
    "type": "object",
    "required": ["jobs", "workers", "streams"],
    "properties": {
        "jobs": {
            "type": "object",
            "required": ["total", "queued", "processing", "completed", "failed"],
            "additionalProperties": COUNT,
        },
        "workers": {"type": "object", "required": ["total", "healthy"], "additionalProperties": COUNT},
        "streams": {"type": "object", "required": ["total", "live"], "additionalProperties": COUNT},
        "system": {"type": "object"},
    },
}
JOB_EVENT = {
    "anyOf": [
        {"type": "object", "required": ["job_id"], "properties": {"job_id": ID, "status": {"type": "string"}}},
        JOB,
    ]
}
JOB_LOG = {
    "type": "object",
    "required": ["id", "job_id", "level", "message", "created_at"],
    "properties": {"id": ID, "job_id": ID, "level": {"type": "string"}, "message": {"type": "string"}},
}
PUBLISH = {
    "type": "object",
    "required": ["success"],
    "properties": {"success": {"type": "boolean"}, "message": {"type": "string"}},
}
WORKER = {
    "type": "object",
    "required": ["id", "hostname", "version", "last_heartbeat", "status", "is_healthy"],
    "properties": {
        "id": ID,
        "hostname": {"type": "string"},
        "version": {"type": "string"},
        "last_heartbeat": TIMESTAMP,
        "status": {"type": "string"},
        "is_healthy": {"type": "boolean"},
        # DIFF: capabilities are a list of names (encoders, cpu:N...), not a map.
        "capabilities": {"type": ["array", "object", "null"]},
        "current_task_id": NULLABLE_STRING,
    },
}
ERROR = {"type": "object"}

# (path, method) -> {status: JSON body schema or None}
OPERATIONS: dict[tuple[str, str], dict[str, dict[str, Any] | None]] = {
    ("/v1/jobs", "post"): {"201": JOB, "400": None, "422": None, "401": ERROR},
    ("/v1/jobs", "get"): {"200": {"type": "array", "items": JOB}, "401": ERROR},
    ("/v1/jobs/{id}", "get"): {"200": JOB_DETAIL, "404": ERROR, "401": ERROR},
    # DIFF: 409 while the job runs (WebEncode's UI only offers it then), 404 for an unknown job.
    ("/v1/jobs/{id}", "delete"): {"204": None, "404": None, "409": None, "401": ERROR},
    ("/v1/jobs/{id}/cancel", "post"): {"200": CANCEL, "401": ERROR},
    ("/v1/jobs/{id}/retry", "post"): {"200": JOB, "201": JOB, "401": ERROR},
    ("/v1/jobs/{id}/logs", "get"): {"200": {"type": "array", "items": JOB_LOG}, "401": ERROR},
    # DIFF: 422 for a body that fails validation (reelhouse-wide), 404 for an unknown job.
    ("/v1/jobs/{id}/publish", "post"): {"200": PUBLISH, "400": None, "404": None, "422": None, "401": ERROR},
    ("/v1/workers", "get"): {"200": {"type": "array", "items": WORKER}},
    ("/v1/profiles", "get"): {"200": {"type": "array", "items": PROFILE}, "401": ERROR},
    ("/v1/profiles/{id}", "get"): {"200": PROFILE, "404": ERROR, "401": ERROR},
    ("/v1/plugins", "get"): {"200": {"type": "array", "items": PLUGIN}, "401": ERROR},
    ("/v1/plugins/{id}", "get"): {"200": PLUGIN, "404": ERROR, "401": ERROR},
    ("/v1/plugins/{id}", "put"): {"200": _status("updated"), "401": ERROR},
    ("/v1/plugins/{id}/enable", "post"): {"200": _status("enabled"), "401": ERROR},
    ("/v1/plugins/{id}/disable", "post"): {"200": _status("disabled"), "401": ERROR},
    ("/v1/webhooks", "get"): {"200": {"type": "array", "items": WEBHOOK}, "401": ERROR},
    ("/v1/webhooks", "post"): {"201": WEBHOOK, "400": None, "401": ERROR},
    ("/v1/webhooks/{id}", "get"): {"200": WEBHOOK, "404": ERROR, "401": ERROR},
    ("/v1/webhooks/{id}", "delete"): {"204": None, "401": ERROR},
    ("/v1/audit", "get"): {"200": {"type": "array", "items": AUDIT}, "401": ERROR},
    ("/v1/system/health", "get"): {"200": HEALTH, "401": ERROR},
    ("/v1/system/stats", "get"): {"200": STATS, "401": ERROR},
    ("/v1/events/jobs", "get"): {"200": None, "401": ERROR},
    ("/v1/events/jobs/{id}", "get"): {"200": None, "401": ERROR},
}

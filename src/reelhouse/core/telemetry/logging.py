"""Log setup: text or JSON lines with `component` and `corr` on every record, secrets masked."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from reelhouse.core.telemetry.correlation import current_correlation_id

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}


class ContextFilter(logging.Filter):
    """Adds `corr` (request/task correlation id) and a default `component` to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "corr", None):
            record.corr = current_correlation_id()
        if not getattr(record, "component", None):
            record.component = record.name.removeprefix("reelhouse.").split(".")[0]
        return True


class RedactFilter(logging.Filter):
    """Replaces known secret values wherever they appear in a message or its fields."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self._clean(record.getMessage())
            record.args = None
            for key, value in list(vars(record).items()):
                if key not in _STANDARD and isinstance(value, str):
                    setattr(record, key, self._clean(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                payload[key] = value
        if record.exc_info:
            payload["error"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in vars(record).items()
                          if k not in _STANDARD and v is not None)
        line = (f"{datetime.fromtimestamp(record.created, tz=timezone.utc):%Y-%m-%dT%H:%M:%S.%fZ} "
                f"{record.levelname:<7} {record.name}: {record.getMessage()}")
        if fields:
            line += f" [{fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info", fmt: str = "text", secrets: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter(secrets or []))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel({"warn": "WARNING"}.get(level, level.upper()))
    # httpx logs full URLs at INFO; upload session URIs and signed links must not reach logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)

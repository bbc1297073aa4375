"""Log setup: text or JSON lines with `component` and `corr` on every record, secrets masked.

Masking happens on the finished line (message, fields and traceback together), at every level,
so nothing a formatter adds can slip past it. What is masked:
- every configured secret: the values of environment (and `.env`) variables whose names say they
  are secret (`*SECRET*`, `*TOKEN*`, `*PASSWORD*`, `*_KEY`, `DATABASE_URL`/`DB_DSN` passwords...),
  plus whatever the caller passes;
- secrets met at run time: OAuth tokens are registered by the token store when it loads or
  saves them (`register_secret`);
- secret shapes: reelhouse API tokens (`rh_...`), argon2 hashes, Bearer/Basic credentials,
  `access_token=`/`refresh_token=`/`client_secret=`/`password=` values, OAuth `code`/`state`
  query parameters, Google token shapes.
SQLAlchemy's statement log (on at LOG_LEVEL=debug) never shows the parameters of statements on
the auth and secret tables, never shows result rows, and masks hash- and ciphertext-shaped
parameters of any statement.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from reelhouse.core.telemetry.correlation import current_correlation_id

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}
MASK = "***"
MIN_SECRET_LENGTH = 6
MAX_RUNTIME_SECRETS = 10_000

SECRET_NAME = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE|(^|_)KEY($|_)|ENCRYPTION_KEY|API_KEY|DSN$|DATABASE_URL$",
    re.IGNORECASE,
)
_NOT_SECRET_VALUE = re.compile(r"^(\d+(\.\d+)?[a-z]{0,2}|true|false|yes|no|on|off|none|null)$", re.IGNORECASE)
# (shape, replacement): group 1, when there is one, is the harmless prefix that stays.
SECRET_SHAPES = [
    (re.compile(r"\brh_[A-Za-z0-9_-]{16,}"), MASK),
    (re.compile(r"\$argon2(?:id|i|d)\$[^\s'\")\]]+"), MASK),
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), MASK),
    (re.compile(r"\b1//[A-Za-z0-9._-]{10,}"), MASK),
    (re.compile(r"(?i)(\b(?:bearer|basic) )[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MASK),
    (
        re.compile(
            r"(?i)(\b(?:access_token|refresh_token|id_token|client_secret|password|password_hash|token_hash|"
            r"x-admin-token|oauth_token|api_key)[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,;})\]]+"
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(?i)([?&](?:code|state|token|key|sig|signature)=)[^&\s\"']+"), r"\1" + MASK),
]
# Extra shapes for SQLAlchemy's parameter log: token and password hashes, envelope ciphertexts.
SQL_SHAPES = [re.compile(r"\b[0-9a-f]{64}\b"), re.compile(r"\brh1\.[A-Za-z0-9_.-]+")]
# Tables whose statements' parameters are never logged (others' still show, masked by shape).
SENSITIVE_TABLES = ("users", "api_tokens", "oauth_tokens", "kv", "audit_log", "vault_")
_SQL_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+\"?(\w+)", re.IGNORECASE)


class Redactor:
    """The set of secret values and shapes every line is cleaned of."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._static: set[str] = set()
        self._runtime: dict[str, None] = {}  # insertion-ordered, bounded
        self._ordered: list[str] = []
        self.add_static(secrets)

    def add_static(self, secrets: Iterable[str]) -> None:
        with self._lock:
            for secret in secrets:
                for variant in _variants(secret):
                    self._static.add(variant)
            self._rebuild()

    def add_runtime(self, *secrets: str | None) -> None:
        new = [v for s in secrets if s for v in _variants(s) if v not in self._runtime and v not in self._static]
        if not new:
            return
        with self._lock:
            for value in new:
                self._runtime[value] = None
            while len(self._runtime) > MAX_RUNTIME_SECRETS:
                self._runtime.pop(next(iter(self._runtime)))
            self._rebuild()

    def _rebuild(self) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._ordered = sorted({*self._static, *self._runtime}, key=len, reverse=True)

    def clean(self, text: str, *, sql: bool = False) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        for shape, replacement in SECRET_SHAPES:
            text = shape.sub(replacement, text)
        if sql:
            for shape in SQL_SHAPES:
                text = shape.sub(MASK, text)
        return text


def _variants(secret: str | None) -> list[str]:
    """The secret as written and as it appears inside JSON and URLs."""
    if not secret or len(secret) < MIN_SECRET_LENGTH or _NOT_SECRET_VALUE.match(secret.strip()):
        return []
    found = {secret, json.dumps(secret)[1:-1]}
    if "://" in secret:
        try:
            password = urlsplit(secret).password
        except ValueError:
            password = None
        if password and len(password) >= 3:
            found.add(password)
    return [v for v in found if len(v) >= 3]


REDACTOR = Redactor()  # logging itself is process-wide; so is the set of values it must not print


def register_secret(*values: str | None) -> None:
    """Mask these values in every log line from now on (OAuth tokens met at run time)."""
    REDACTOR.add_runtime(*values)


def secrets_from_environment(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> list[str]:
    """Values of variables whose names say they are secret, from the environment and `.env`."""
    values = dict(_dotenv(env_file or Path(".env")))
    values.update(environ if environ is not None else os.environ)
    return [value for name, value in values.items() if SECRET_NAME.search(name) and value]


def _dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # pydantic-settings' own .env reader

    return {k: v for k, v in dotenv_values(path).items() if v}


class ContextFilter(logging.Filter):
    """Adds `corr` (request/task correlation id) and a default `component` to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "corr", None):
            record.corr = current_correlation_id()
        if not getattr(record, "component", None):
            record.component = record.name.removeprefix("reelhouse.").split(".")[0]
        return True


class SqlParameterFilter(logging.Filter):
    """SQLAlchemy logs a statement, then its parameters, in two records from one synchronous
    call; the parameters of a statement on a sensitive table are replaced."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("sqlalchemy.engine"):
            return True
        if record.args and isinstance(record.msg, str) and record.msg.startswith("[") and "%r" in record.msg:
            if getattr(self._local, "sensitive", False):
                record.args = (record.args[0], "(parameters of a sensitive table hidden)")  # type: ignore[index]
            return True
        message = str(record.msg)
        tables = {t.lower() for t in _SQL_TABLE.findall(message)}
        self._local.sensitive = any(t == s or t.startswith(s) for t in tables for s in SENSITIVE_TABLES)
        return True


_DATABASE_LOGGERS = ("sqlalchemy", "aiosqlite", "asyncpg")


def _masked(formatted: str, record: logging.LogRecord) -> str:
    return REDACTOR.clean(formatted, sql=record.name.startswith(_DATABASE_LOGGERS))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                payload[key] = value
        if record.exc_info:
            payload["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return _masked(json.dumps(payload, default=str), record)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and v is not None)
        line = (
            f"{datetime.fromtimestamp(record.created, tz=UTC):%Y-%m-%dT%H:%M:%S.%fZ} "
            f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        if fields:
            line += f" [{fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return _masked(line, record)


def setup_logging(level: str = "info", fmt: str = "text", secrets: list[str] | None = None) -> None:
    """Install the one handler. `secrets` are masked besides those found in the environment."""
    REDACTOR.add_static([*(secrets or []), *secrets_from_environment()])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(SqlParameterFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel({"warn": "WARNING"}.get(level, level.upper()))
    # httpx logs full URLs at INFO; upload session URIs and signed links must not reach logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Statements (and their masked parameters) at debug; result rows, never.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO if level == "debug" else logging.WARNING)
    # aiosqlite logs every call with its arguments at debug: the statement log above says enough.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)

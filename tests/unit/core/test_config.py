from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reelhouse.config import ConfigError, Settings, normalize_database_url, parse_duration


def test_runbook_names_and_aliases(monkeypatch):
    monkeypatch.setenv("DB_DSN", "postgres://vod:vod@db:5432/vod?sslmode=disable")
    monkeypatch.setenv("ENCRYPTION_KEY", "k" * 32)
    monkeypatch.setenv("PORT", "9090")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://vod:vod@db:5432/vod"
    assert settings.security.master_encryption_key == "k" * 32
    assert settings.server.bind == ("127.0.0.1", 9090)
    assert settings.logging.log_level == "debug"


def test_defaults_are_embedded_sqlite(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DB_DSN", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path}/reelhouse.db"
    assert settings.server.bind == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    "name,value",
    [
        ("PORT", "99999"),
        ("LOG_FORMAT", "xml"),
        ("CIRCUIT_FAILURE_THRESHOLD", "-1"),
        ("CIRCUIT_OPEN_COOLDOWN", "soon"),
        ("WORKER_CONCURRENCY", "zero"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        Settings()
    assert name in str(info.value)


def test_durations():
    assert parse_duration("600s") == timedelta(seconds=600)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    assert parse_duration("45") == timedelta(seconds=45)
    for bad in ("", "5 minutes", "1x", "m5"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@given(h=st.integers(0, 99), m=st.integers(0, 59), s=st.integers(0, 59))
def test_duration_parts_add_up(h, m, s):
    text = f"{h}h{m}m{s}s"
    assert parse_duration(text) == timedelta(hours=h, minutes=m, seconds=s)


def test_database_url_rejects_other_engines():
    with pytest.raises(ValueError):
        normalize_database_url("mysql://root@localhost/x")

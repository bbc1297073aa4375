"""What every `reelhouse` command shares: consoles, settings, a runtime for the command's
work, and uniform output. Domain CLIs import these from here, never from `reelhouse.cli`
(the entry point, which only assembles the command groups)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from reelhouse.config import ConfigError, Settings, get_settings
from reelhouse.core.runtime import Runtime

console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def load_settings() -> Settings:
    """The settings tree, with logging set up from it; a bad variable exits 2 with its name."""
    try:
        settings = get_settings()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    from reelhouse.core.telemetry.logging import setup_logging

    sec, store = settings.security, settings.storage
    setup_logging(
        settings.logging.log_level,
        settings.logging.log_format,
        secrets=[sec.admin_token, sec.master_encryption_key, store.s3_secret_access_key],
    )
    return settings


def with_runtime(action: Callable[[Runtime], Awaitable[T]], *, create: bool = False) -> T:
    """Run `action(runtime)` against the configured database, then close the engine.

    Only `create` (the `migrate` command) makes or migrates a database; every other command
    names the database it uses on stderr and fails clearly when it is missing or behind, so a
    command run with the wrong DATA_DIR never works on a new, empty database."""
    from reelhouse.core.db.migrate import pending_revisions, run_migrations
    from reelhouse.core.runtime import build_runtime

    settings = load_settings()
    label = settings.database_label()
    path = settings.sqlite_path()
    if create:
        settings.server.data_dir.mkdir(parents=True, exist_ok=True)
    elif path is not None and not path.is_file():
        raise fail(
            f"no database at {path} (DATA_DIR={settings.server.data_dir}); run `reelhouse migrate` "
            "or `reelhouse serve` there first, or set DATABASE_URL / DATA_DIR / REELHOUSE_HOME",
            2,
        )
    err.print(f"[dim]database: {label}[/dim]")

    async def main() -> T:
        runtime = build_runtime(settings)
        try:
            if create:
                await run_migrations(runtime.engine)
            else:
                try:
                    pending = await pending_revisions(runtime.engine)
                except (OSError, SQLAlchemyError) as exc:
                    raise fail(f"cannot open the database ({label}): {type(exc).__name__}: {exc}"[:500], 2) from None
                if pending:
                    raise fail(f"the database ({label}) needs migrating: run `reelhouse migrate`", 2)
            return await action(runtime)
        finally:
            await runtime.aclose()

    return asyncio.run(main())


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` in red on stderr; `raise fail(...)` ends the command with `code`."""
    err.print(f"[red]{message}[/red]")
    return typer.Exit(code)


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def render_rows(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(row.get(c) if row.get(c) is not None else "") for c in columns])
    console.print(table)

"""A PostgreSQL server of a test's own: `initdb` into a temporary folder and `pg_ctl` on a free
loopback port, from the Debian binaries the machine's shared server runs on. For what must not
touch the shared server: restarting the database under a running job, `ALTER SYSTEM`.

initdb refuses to run as root, so when the tests run as root (CI here) the cluster belongs to
the `postgres` user the Debian package made and the commands run through `runuser`."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT = 60


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PrivatePostgres:
    """One cluster: `dsn(database)` for asyncpg/SQLAlchemy, `restart()`, `stop()`, `start()`."""

    bindir: Path
    datadir: Path
    port: int
    owner: str | None  # run the server as this user (when the tests run as root)

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=START_TIMEOUT + 30)

    def dsn(self, database: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} -c fsync=off"
        done = self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.datadir / "server.log"), "-o", options,
            "-w", "-t", str(START_TIMEOUT), "start", check=False,
        )  # fmt: skip
        if done.returncode != 0:
            log = (self.datadir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"private PostgreSQL did not start: {done.stderr.strip()}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        """`fast` rolls back and disconnects clients; `immediate` is a crash (recovery at the next start)."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> None:
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", f'CREATE DATABASE "{name}"')


def _owner() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return "postgres"


@pytest.fixture
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    bindir = _bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) are missing")
        pytest.skip("PostgreSQL's server binaries are not installed")
    owner = _owner()
    if os.geteuid() == 0 and owner is None:
        pytest.fail("running as root needs the `postgres` user to own a private cluster")
    base = tmp_path_factory.mktemp("pg")
    datadir = base / "data"
    if owner:
        entry = pwd.getpwnam(owner)
        # the user needs to reach the folder through the pytest temp tree (root-owned, 0700)
        for parent in [base, *base.parents]:
            if parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
        datadir.mkdir(mode=0o700)
        os.chown(datadir, entry.pw_uid, entry.pw_gid)
    cluster = PrivatePostgres(bindir=bindir, datadir=datadir, port=_free_port(), owner=owner)
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)

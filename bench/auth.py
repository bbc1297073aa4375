"""Event-loop lag while a storm of wrong logins arrives from one address.

    .venv/bin/python bench/auth.py [--logins 200] [--concurrency 20] [--rounds 3]

A lag probe sleeps 5 ms in a loop on the app's event loop and records how late each wake-up
is: that is what the embedded worker's heartbeats and the chat recorder would suffer. Three
scenarios, same run, alternating per round:
- idle: no requests (the machine's own noise: the baseline);
- storm: `--logins` wrong logins with distinct usernames from one address through the real app
  (ASGI, SQLite); the limiter answers all but the first 10 with 429; the 10 argon2 checks
  run in the password thread pool;
- storm, no limiter: the same with RATE_LIMIT_ENABLED=false, so every login costs an argon2
  check (the pool's worst case);
- on-loop argon2 (the code before this change): the same number of argon2 checks as the
  no-limiter storm, run on the event loop, `--concurrency` at a time, for comparison.
Prints p50/p99/max lag per scenario and the p99 ratio to idle; target: storm p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.runtime import build_runtime
from reelhouse.core.security import passwords
from reelhouse.core.security.users import create_user

PROBE_SECONDS = 0.005


async def probe(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(PROBE_SECONDS)
        lags.append(time.perf_counter() - started - PROBE_SECONDS)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def scenario(name: str, logins: int, concurrency: int, *, limiter: bool, on_loop: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(
            DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/bench.db",
            DATA_DIR=f"{tmp}/data",
            RATE_LIMIT_ENABLED="true" if limiter else "false",
            LOG_LEVEL="warning",
        )
        settings = Settings()
        runtime = build_runtime(settings)
        app = create_app(settings, runtime=runtime, background=False)
        transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 4000))
        lags: list[float] = []
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
        ):
            await create_user(runtime.engine, "someone", "the right password", "viewer")
            # Warm-up from another address (first-use costs: statement compilation, thread start).
            warm = httpx.ASGITransport(app=app, client=("198.51.100.10", 4000))
            async with httpx.AsyncClient(transport=warm, base_url="http://bench") as other:
                for i in range(3):
                    await other.post("/auth/login", json={"username": f"warm{i}", "password": "wrong password"})
            stop = asyncio.Event()
            probing = asyncio.create_task(probe(stop, lags))
            if name == "idle":
                await asyncio.sleep(1.0)
            elif on_loop:
                stored = passwords.hash_password("the right password")

                async def checker(count: int) -> None:
                    for _ in range(count):
                        passwords.verify_password(stored, "wrong password")  # blocks the loop, as before
                        await asyncio.sleep(0)

                share = logins // concurrency
                await asyncio.gather(*(checker(share) for _ in range(concurrency)))
            else:
                queue = iter(range(logins))

                async def sender() -> None:
                    for i in queue:
                        await client.post("/auth/login", json={"username": f"user{i}", "password": "wrong password"})

                await asyncio.gather(*(sender() for _ in range(concurrency)))
            stop.set()
            await probing
        await runtime.engine.dispose()
        return lags


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    scenarios = {
        "idle": {"limiter": True, "on_loop": False},
        "storm (limiter on)": {"limiter": True, "on_loop": False},
        "storm, limiter off (200 argon2 checks in the pool)": {"limiter": False, "on_loop": False},
        "storm, limiter off, argon2 on the loop (before)": {"limiter": False, "on_loop": True},
    }
    results: dict[str, list[float]] = {name: [] for name in scenarios}
    for _ in range(args.rounds):
        for name, options in scenarios.items():
            kind = "idle" if name == "idle" else "storm"
            results[name] += await scenario(kind, args.logins, args.concurrency, **options)
    idle_p99 = percentile(results["idle"], 0.99)
    print(f"{args.logins} wrong logins, {args.concurrency} at a time, {args.rounds} rounds; lag probe every 5 ms")
    print("| scenario | samples | p50 ms | p99 ms | max ms | p99 / idle p99 |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, lags in results.items():
        p99 = percentile(lags, 0.99)
        print(
            f"| {name} | {len(lags)} | {statistics.median(lags) * 1000:.2f} | {p99 * 1000:.2f} | "
            f"{max(lags) * 1000:.2f} | {p99 / idle_p99 if idle_p99 else float('nan'):.1f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())

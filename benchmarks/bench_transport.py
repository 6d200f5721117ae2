"""httpx's own transport vs httpx_aiohttp.AiohttpTransport under the SDK (asyncio), at
concurrency 1/16/64, against the local server in its own process. Reports requests/s and the
client's CPU time per request (the part the transport is responsible for).

    python benchmarks/bench_transport.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import anyio
import httpx
from httpx_aiohttp import AiohttpTransport

import comps_async as ca

from common import report, server_process

TRANSPORTS: dict[str, Callable[[], httpx.AsyncBaseTransport | None]] = {
    # Passed explicitly: the SDK's default is the aiohttp one, so None would measure it twice.
    "httpx_own": lambda: httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
    ),
    "httpx_aiohttp": lambda: AiohttpTransport(
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
    ),
}


async def measure(
    url: str, token: str, transport: httpx.AsyncBaseTransport | None, total: int, concurrency: int
) -> dict[str, float]:
    async with ca.Session(
        url, token=token, transport=transport, max_concurrent_requests=concurrency
    ) as s:
        suite = await s.suites.create(ca.Suite(name="transport-bench"))
        for _ in range(20):  # warm the pool
            await s.suites.get(suite)
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await s.suites.get(suite)

        wall, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "requests_per_s": round(total / wall),
        "client_cpu_us_per_request": round(cpu / total * 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    with server_process() as server:
        for concurrency in (1, 16, 64):
            for name, make in TRANSPORTS.items():
                results.setdefault(f"concurrency_{concurrency}", {})[name] = anyio.run(
                    measure,
                    server.url,
                    server.token,
                    make(),
                    args.requests,
                    concurrency,
                    backend="asyncio",
                )
    report("SDK transport comparison (GET by id through the full pipeline)", results)


if __name__ == "__main__":
    main()

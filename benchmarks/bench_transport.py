"""CPU per request: the SDK's ``suites.get`` over httpx's own transport and over the aiohttp one
(the default under asyncio), beside three floors — the same GET built as an ``httpx.Request`` and
sent straight to the aiohttp transport; bare aiohttp with only httpx's request and response
objects built around it (what any client whose policies see httpx objects pays); bare aiohttp —
at concurrency 1/16/64, against the local server in its own process. Reports requests/s and
the client's CPU time per request (``time.process_time()``: this process only).

    python benchmarks/bench_transport.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anyio
import httpx

import comps_async as ca
from comps_async._transports import default_transport

from common import (
    add_profile_argument,
    apply_profile,
    chosen_profiles,
    report,
    server_process,
    wan_scaled,
)

LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)
TRANSPORTS: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
    # Passed explicitly: the SDK's default is the aiohttp one, so None would measure it twice.
    "httpx_own": lambda: httpx.AsyncHTTPTransport(limits=LIMITS),
    "aiohttp_default": lambda: default_transport(True, LIMITS),
}


async def figures(
    get: Callable[[], Awaitable[object]], total: int, concurrency: int
) -> dict[str, float]:
    """``total`` calls of ``get``, ``concurrency`` at a time, after a few to warm the pool."""
    for _ in range(min(20, total)):  # warm the pool
        await get()
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await get()

    wall, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "requests_per_s": round(total / wall),
        "client_cpu_us_per_request": round(cpu / total * 1e6),
    }


async def measure(
    url: str,
    token: str,
    make: Callable[[], httpx.AsyncBaseTransport],
    total: int,
    concurrency: int,
) -> dict[str, float]:
    async with ca.Session(
        url, token=token, transport=make(), max_concurrent_requests=concurrency
    ) as s:
        suite = await s.suites.create(ca.Suite(name="transport-bench"))
        return await figures(lambda: s.suites.get(suite), total, concurrency)


def _headers(token: str) -> dict[str, str]:
    return {"X-COMPS-Token": token, "Accept": "application/json"}


async def httpx_request_floor(
    url: str, token: str, total: int, concurrency: int
) -> dict[str, float]:
    """An ``httpx.Request`` per call, sent straight to the SDK's aiohttp transport, body read:
    no pipeline, no models — the floor of any client built on httpx's request objects."""
    async with ca.Session(url, token=token) as s:
        suite = await s.suites.create(ca.Suite(name="transport-floor"))
    transport = default_transport(True, LIMITS)
    target = f"{url}/api/Suites/{suite.id}"

    async def get() -> None:
        response = await transport.handle_async_request(
            httpx.Request("GET", target, headers=_headers(token))
        )
        await response.aread()

    try:
        return await figures(get, total, concurrency)
    finally:
        await transport.aclose()


async def aiohttp_in_httpx_objects(
    url: str, token: str, total: int, concurrency: int
) -> dict[str, float]:
    """Bare aiohttp with only an ``httpx.Request`` built before and an ``httpx.Response`` after:
    the least an SDK pays whose policies see httpx's request and response objects."""
    async with ca.Session(url, token=token) as s:
        suite = await s.suites.create(ca.Suite(name="transport-objects"))
    target = f"{url}/api/Suites/{suite.id}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:

        async def get() -> None:
            request = httpx.Request("GET", target, headers=_headers(token))
            async with http.get(str(request.url), headers=request.headers.multi_items()) as r:
                body = await r.read()
                httpx.Response(r.status, headers=r.raw_headers, content=body, request=request)

        return await figures(get, total, concurrency)


async def bare_aiohttp(url: str, token: str, total: int, concurrency: int) -> dict[str, float]:
    """The same GET with aiohttp alone, body read: the floor under every httpx-based client."""
    async with ca.Session(url, token=token) as s:
        suite = await s.suites.create(ca.Suite(name="transport-bare"))
    target = f"{url}/api/Suites/{suite.id}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:

        async def get() -> None:
            async with http.get(target, headers=_headers(token)) as response:
                await response.read()

        return await figures(get, total, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    add_profile_argument(parser)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    for profile in chosen_profiles(args):
        figures[profile] = _measure_profile(profile, wan_scaled(profile, args.requests))
    report("SDK transport comparison (GET by id through the full pipeline)", figures)


def _measure_profile(profile: str, requests: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with server_process() as server:
        apply_profile(server.url, server.token, profile)
        for concurrency in (1, 16, 64):
            for name, make in TRANSPORTS.items():
                results.setdefault(f"concurrency_{concurrency}", {})[name] = anyio.run(
                    measure,
                    server.url,
                    server.token,
                    make,
                    requests,
                    concurrency,
                    backend="asyncio",
                )
            row = results[f"concurrency_{concurrency}"]
            for name, floor in (
                ("httpx_request_floor", httpx_request_floor),
                ("aiohttp_in_httpx_objects", aiohttp_in_httpx_objects),
                ("bare_aiohttp", bare_aiohttp),
            ):
                row[name] = anyio.run(
                    floor, server.url, server.token, requests, concurrency, backend="asyncio"
                )
            sdk = row["aiohttp_default"]["client_cpu_us_per_request"]
            row["sdk_cpu_vs_bare_aiohttp"] = round(
                sdk / row["bare_aiohttp"]["client_cpu_us_per_request"], 2
            )
            row["httpx_objects_vs_bare_aiohttp"] = round(
                row["aiohttp_in_httpx_objects"]["client_cpu_us_per_request"]
                / row["bare_aiohttp"]["client_cpu_us_per_request"],
                2,
            )
            row["httpx_floor_vs_bare_aiohttp"] = round(
                row["httpx_request_floor"]["client_cpu_us_per_request"]
                / row["bare_aiohttp"]["client_cpu_us_per_request"],
                2,
            )
    return results


if __name__ == "__main__":
    main()

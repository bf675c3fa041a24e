"""Accept latency of POST /v1/messages (median, p99) and messages/s delivered hub -> St. Olavs over http
with CMS, between two real gateway processes on loopback.

    .venv/bin/python bench/accept_and_deliver.py [--messages 2000]

Accept: one client posting one message at a time (each 202 means stored with synchronous=FULL).
Both receivers' routes are paused while the messages are accepted (so accepting is measured alone), then
resumed, and the clock runs until every delivery is sent; 13 senders, so 13 ordered lanes to St. Olavs
run side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.traffic import message  # noqa: E402
from gateway.config import load_settings  # noqa: E402
from gateway.registry import load_register  # noqa: E402
from gateway.replay import Region, launch_region, stop_region, wait_until_up  # noqa: E402

ROUTES = ("7200101", "7103001")  # St. Olavs, and the legevakt every message is copied to


async def run(region: Region, n: int) -> None:
    await wait_until_up(region)
    hub = region.hub_url
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {region.token}"}) as s:
        for route in ROUTES:
            await (await s.post(f"{hub}/v1/admin/routes/{route}/pause")).read()
        bodies = [message(i) for i in range(n)]
        latencies = []
        for body in bodies:
            t = time.perf_counter()
            async with s.post(f"{hub}/v1/messages", data=body) as response:
                assert response.status == 202, await response.text()
                await response.read()
            latencies.append(time.perf_counter() - t)
        latencies.sort()
        print(
            f"accept: {n} messages, median {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {latencies[int(0.99 * (n - 1))] * 1000:.1f} ms"
        )
        started = time.perf_counter()
        for route in ROUTES:
            await (await s.post(f"{hub}/v1/admin/routes/{route}/resume")).read()
        while True:
            counts = (await (await s.get(f"{hub}/v1/admin/routes")).json())["items"]
            waiting = sum(
                r["deliveries"].get("queued", 0) + r["deliveries"].get("retrying", 0)
                for r in counts
                if r["route"] in ROUTES
            )
            if waiting == 0:
                break
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
        print(
            f"delivered: {n} messages to St. Olavs over http with CMS in {elapsed:.1f} s = {n / elapsed:.0f} messages/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    settings = load_settings(ROOT / "config" / "gateway.toml")
    work = Path(tempfile.mkdtemp(prefix="bench-deliver-"))
    region = launch_region(
        settings, load_register(settings.gateway.region), work, overrides={"delivery": {"poll_interval_s": 0.1}}
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; work dir {work}")
    try:
        asyncio.run(run(region, args.messages))
    finally:
        stop_region(region)


if __name__ == "__main__":
    main()

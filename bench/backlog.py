"""Draining a backlog after an outage: messages/s and the sending gateway's RSS.

    .venv/bin/python bench/backlog.py [--messages 100000]

St. Olavs is down while N messages are accepted by the hub (through the hub's own outbound pipeline,
into its real SQLite store); then both gateways run as processes and the clock runs until the hub has
nothing queued or retrying. Each message also has a copy receiver at the hub (the legevakt), so the
backlog holds 2N deliveries; 13 municipalities send, so there are 13 ordered lanes to St. Olavs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.traffic import message  # noqa: E402
from gateway.config import load_settings  # noqa: E402
from gateway.log import configure  # noqa: E402
from gateway.pipeline.outbound import Client  # noqa: E402
from gateway.registry import load_register  # noqa: E402
from gateway.replay import Region, launch_region, stop_region, wait_until_up  # noqa: E402
from gateway.service import Gateway  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def fill(region: Region, n: int) -> float:
    """Accept n messages into the (stopped) hub's store through its own outbound pipeline."""
    settings = load_settings(region.work_dir / "sio-hub" / "gateway.toml")
    started = time.perf_counter()
    async with Gateway(dataclasses.replace(settings)) as hub:
        client = Client("bench", None, True)
        for i in range(n):
            await hub.outbound.submit(message(i), client)
    return time.perf_counter() - started


async def drain(region: Region, n: int) -> None:
    await wait_until_up(region)
    pid = region.processes[0].pid
    peak = rss_kib(pid)
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while True:
            peak = max(peak, rss_kib(pid))
            async with session.get(f"{region.hub_url}/healthz") as response:
                queue = (await response.json())["queue"]
            if not queue.get("queued") and not queue.get("retrying"):
                break
            await asyncio.sleep(1.0)
    elapsed = time.perf_counter() - started
    print(
        f"drained {n} messages ({2 * n} deliveries) in {elapsed:.0f} s = {n / elapsed:.0f} messages/s "
        f"({2 * n / elapsed:.0f} deliveries/s)"
    )
    print(f"hub RSS while draining: peak {peak / 1024:.0f} MiB, at the end {rss_kib(pid) / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--route-concurrency", type=int, default=None, help="override retry.route_concurrency")
    args = parser.parse_args()
    configure(fmt="console", level="warning")
    settings = load_settings(ROOT / "config" / "gateway.toml")
    work = Path(tempfile.mkdtemp(prefix="bench-backlog-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; work dir {work}")
    overrides: dict[str, dict[str, object]] = {"log": {"level": "warning"}}
    if args.route_concurrency:
        overrides["retry"] = {"route_concurrency": args.route_concurrency}
        print(f"retry.route_concurrency = {args.route_concurrency}")
    region = launch_region(settings, load_register(settings.gateway.region), work, overrides=overrides)
    asyncio.run(wait_until_up(region))
    stop_region(region)  # the outage: nobody runs while the backlog builds
    seconds = asyncio.run(fill(region, args.messages))
    print(
        f"accepted {args.messages} messages into the hub's store in {seconds:.0f} s "
        f"({args.messages / seconds:.0f} messages/s, synchronous=FULL)"
    )
    region.processes = [region.start("sio-hub"), region.start("st-olavs")]
    try:
        asyncio.run(drain(region, args.messages))
    finally:
        stop_region(region)


if __name__ == "__main__":
    main()

"""Proof that nothing is lost: the sending gateway is killed with SIGKILL over and over while messages are
submitted; at the end every accepted message (every 2xx) is delivered, and every receiver holds it once.

Two real gateway processes on loopback (the hub and a simulated St. Olavs), CMS on, real SQLite files.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from gateway.config import PROJECT_ROOT, load_settings
from gateway.registry import load_register
from gateway.replay import Region, launch_region, stop_region, wait_until_up

from .region import fixture_bytes, with_msg_id

pytestmark = pytest.mark.slow

MESSAGES = 2000
KILLS = 20
SENDERS = 6
TEMPLATE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> St. Olavs, copy to LiO


def message(msg_id: str) -> bytes:
    return with_msg_id(fixture_bytes(TEMPLATE), msg_id)


class Chaos:
    def __init__(self, region: Region) -> None:
        self.region = region
        self.accepted: set[str] = set()
        self.kills = 0
        self.kills_while_submitting = 0
        self.rng = random.Random(20261122)

    async def submit_all(self, session: aiohttp.ClientSession, ids: list[str]) -> None:
        for msg_id in ids:
            body = message(msg_id)
            while True:
                try:
                    async with session.post(f"{self.region.hub_url}/v1/messages", data=body) as response:
                        if response.status in (200, 202):
                            self.accepted.add(msg_id)
                            break
                        assert response.status >= 500, await response.text()
                except (aiohttp.ClientError, OSError):
                    pass  # the hub is down (killed): try the same message again
                await asyncio.sleep(0.05)

    async def kill_repeatedly(self) -> None:
        """SIGKILL the hub at random points of the submission (after a random number of accepted messages,
        plus a random fraction of a second), restart it, and again - so every kill lands mid-traffic."""
        points = sorted(self.rng.sample(range(20, MESSAGES - 20), KILLS))
        hub = self.region.processes[0]
        for point in points:
            while len(self.accepted) < point:  # noqa: ASYNC110 - a counter the submitters bump
                await asyncio.sleep(0.01)
            await asyncio.sleep(self.rng.uniform(0, 0.3))
            hub.send_signal(signal.SIGKILL)
            await asyncio.to_thread(hub.wait)
            self.kills += 1
            self.kills_while_submitting += len(self.accepted) < MESSAGES
            hub = self.region.start("sio-hub")
            self.region.processes[0] = hub
            await wait_until_up(self.region)


async def drained(session: aiohttp.ClientSession, url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with session.get(f"{url}/healthz") as response:
            queue = (await response.json())["queue"]
        if not queue.get("queued") and not queue.get("retrying"):
            return True
        await asyncio.sleep(0.5)
    return False


def received(db: Path, receiver: str) -> Counter[str]:
    """MsgId -> how many times the receiver's side stored it as a good received message."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            """SELECT msg_id FROM messages WHERE direction = 'in' AND receiver_her = ? AND kind != 'apprec-1.1'
               AND state IN ('received', 'delivered')""",
            (receiver,),
        ).fetchall()
    return Counter(r[0] for r in rows)


def test_sigkill_loses_nothing(tmp_path: Path) -> None:
    """≥2,000 messages, ≥20 SIGKILLs of the sender mid-flight: every 2xx delivered once to each receiver."""
    settings = load_settings(PROJECT_ROOT / "config" / "gateway.toml")
    register = load_register(settings.gateway.region)
    overrides = {
        "delivery": {"lease_s": 3.0, "poll_interval_s": 0.1, "concurrency": 16},
        "retry": {"base_s": 0.2, "cap_s": 2.0, "breaker_threshold": 1000},
    }
    region = launch_region(settings, register, tmp_path, overrides=overrides)
    ids = [str(uuid.uuid4()) for _ in range(MESSAGES)]
    chaos = Chaos(region)

    async def run() -> bool:
        await wait_until_up(region)
        headers = {"Authorization": f"Bearer {region.token}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as session:
            shares = [ids[i::SENDERS] for i in range(SENDERS)]
            await asyncio.gather(chaos.kill_repeatedly(), *(chaos.submit_all(session, share) for share in shares))
            return await drained(session, region.hub_url, timeout_s=180)

    try:
        settled = asyncio.run(run())
    finally:
        codes = stop_region(region)
    assert chaos.kills >= KILLS
    assert chaos.kills_while_submitting >= KILLS - 2, "the kills must fall while messages are being submitted"
    assert settled, "the hub's queue did not drain"
    assert codes == [0, 0], "both gateways shut down cleanly on SIGTERM"
    assert chaos.accepted == set(ids)
    at_stolav = received(tmp_path / "st-olavs" / "gateway.sqlite", "7200101")
    at_legevakt = received(tmp_path / "sio-hub" / "gateway.sqlite", "7103001")
    for name, got in (("St. Olavs", at_stolav), ("legevakten", at_legevakt)):
        missing = chaos.accepted - set(got)
        twice = [m for m, n in got.items() if n > 1]
        assert not missing, f"{name} is missing {len(missing)} accepted messages"
        assert not twice, f"{name} holds {len(twice)} messages more than once"
        assert set(got) <= chaos.accepted
    with sqlite3.connect(tmp_path / "st-olavs" / "gateway.sqlite") as conn:
        redelivered = conn.execute(
            "SELECT COALESCE(SUM(duplicates), 0) FROM messages WHERE direction = 'in'"
        ).fetchone()
    print(
        f"kills {chaos.kills} ({chaos.kills_while_submitting} while submitting); duplicates caught by St. Olavs: "
        f"{redelivered[0]}"
    )

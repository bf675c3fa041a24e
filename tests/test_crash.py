"""Proof that nothing is lost: the sending gateway is killed with SIGKILL over and over while messages are
submitted; at the end every accepted message (every 2xx) is delivered, and every receiver holds it once.

Two real gateway processes on loopback (the hub and a simulated St. Olavs), CMS on, real SQLite files.

The first kill falls once a random number of messages (at most a quarter) is accepted, so at least one kill
lands mid-submission by design. After it the kills are driven by time, not by counting messages: after each
restart the hub lives a random while, measured in its own restart time, before the next. Killing goes on
until the submitters are done and at least KILLS kills happened (at most MAX_KILLS, a bound on a slow
machine's time). How many of the later kills fall while submitting is reported, not asserted: that is the
machine's speed, not the gateway's durability. The durability checks come first.
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
from gateway.registry import Register, load_register
from gateway.replay import Region, launch_region, stop_region, wait_until_up

from .region import fixture_bytes, manifest_entry, with_msg_id

# slow; the timeout is only a bound for a stuck run - a loaded machine may take a few minutes
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MESSAGES = 2000
KILLS = 20
MAX_KILLS = KILLS + 10  # then killing stops even if the submitters are not done: a bound on a slow machine's time
UPTIME = (0.25, 1.5)  # the hub lives this many times its last restart's duration before the next kill
SENDERS = 6
DRAIN_S = 300.0  # a bound for a stuck queue, not a measure: a loaded machine drains slowly
TEMPLATE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> St. Olavs, copy to LiO


def message(msg_id: str) -> bytes:
    return with_msg_id(fixture_bytes(TEMPLATE), msg_id)


def in_play(register: Register) -> Register:
    """The region with only the local parties the test sends from and to (and every remote one): a restart
    of the hub then loads two parties' keys, not fifteen - the kills cost seconds of CPU less each."""
    entry = manifest_entry(TEMPLATE)
    wanted = {entry["sender"], *entry["receivers"]}
    return Register([p for p in register if p.her_id in wanted or not p.local], name=register.name)


class Chaos:
    def __init__(self, region: Region) -> None:
        self.region = region
        self.accepted: set[str] = set()
        self.kills = 0
        self.kills_while_submitting = 0
        self.rng = random.Random(20261122)
        self.first_kill_at = self.rng.randint(20, MESSAGES // 4)  # accepted messages
        self.first_kill = asyncio.Event()
        self.restart_s = 0.0  # how long the last restart took: a slow machine lets the hub live longer

    async def submit_all(self, session: aiohttp.ClientSession, ids: list[str]) -> None:
        for msg_id in ids:
            body = message(msg_id)
            while True:
                try:
                    async with session.post(f"{self.region.hub_url}/v1/messages", data=body) as response:
                        if response.status in (200, 202):
                            self.accepted.add(msg_id)
                            if len(self.accepted) >= self.first_kill_at:
                                self.first_kill.set()
                            break
                        assert response.status >= 500, await response.text()
                except (aiohttp.ClientError, OSError):
                    pass  # the hub is down (killed): try the same message again
                await asyncio.sleep(0.05)

    async def kill_repeatedly(self, submitting: asyncio.Future[object]) -> None:
        """SIGKILL the hub, restart it, let it live a random while, and again - until the submitters are done
        and at least KILLS kills happened. The first kill waits for ``first_kill_at`` accepted messages: the
        submitters still have three quarters of their messages to go, so it falls mid-submission. The while
        the hub lives is measured in its own restart time, so it is up for the same share of the time (and
        gets as much work done between kills) on a fast machine and on a slow one."""
        await self.first_kill.wait()
        while True:
            await self.kill_and_restart()
            if (self.kills >= KILLS and submitting.done()) or self.kills >= MAX_KILLS:
                return
            await asyncio.sleep(self.rng.uniform(*UPTIME) * self.restart_s)

    async def kill_and_restart(self) -> None:
        hub = self.region.processes[0]
        hub.send_signal(signal.SIGKILL)
        self.kills += 1
        self.kills_while_submitting += len(self.accepted) < MESSAGES
        began = time.monotonic()
        await asyncio.to_thread(hub.wait)
        self.region.processes[0] = self.region.start("sio-hub")
        await wait_until_up(self.region)
        self.restart_s = time.monotonic() - began


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


def sent_by_hub(db: Path) -> Counter[str]:
    """MsgId -> how many times the hub stored it as a message to send."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT msg_id FROM messages WHERE direction = 'out' AND kind NOT LIKE 'apprec-%'"
        ).fetchall()
    return Counter(r[0] for r in rows)


def test_sigkill_loses_nothing(tmp_path: Path) -> None:
    """2,000 messages, ≥20 SIGKILLs of the sender, the first mid-submission: every 2xx delivered once to each
    receiver, nothing held twice."""
    settings = load_settings(PROJECT_ROOT / "config" / "gateway.toml")
    register = in_play(load_register(settings.gateway.region))
    overrides = {
        "delivery": {"lease_s": 3.0, "poll_interval_s": 0.1, "concurrency": 16},
        "retry": {"base_s": 0.2, "cap_s": 2.0, "breaker_threshold": 1000},
    }
    region = launch_region(settings, register, tmp_path, overrides=overrides)
    ids = [str(uuid.uuid4()) for _ in range(MESSAGES)]
    chaos = Chaos(region)
    took: dict[str, float] = {}

    async def run() -> bool:
        await wait_until_up(region)
        headers = {"Authorization": f"Bearer {region.token}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as session:
            began = time.monotonic()
            shares = [ids[i::SENDERS] for i in range(SENDERS)]
            submitting = asyncio.gather(*(chaos.submit_all(session, share) for share in shares))
            await asyncio.gather(chaos.kill_repeatedly(submitting), submitting)
            took["submitting and killing"] = time.monotonic() - began
            settled = await drained(session, region.hub_url, timeout_s=DRAIN_S)
            took["draining"] = time.monotonic() - began - took["submitting and killing"]
            return settled

    try:
        settled = asyncio.run(run())
    finally:
        codes = stop_region(region)
    # what matters first: nothing lost, nothing doubled
    assert chaos.accepted == set(ids), "every message is accepted in the end (the submitters try again)"
    drain = "" if settled else f" (the hub's queue did not drain within {DRAIN_S:.0f} s)"
    at_stolav = received(tmp_path / "st-olavs" / "gateway.sqlite", "7200101")
    at_legevakt = received(tmp_path / "sio-hub" / "gateway.sqlite", "7103001")
    for name, got in (("St. Olavs", at_stolav), ("legevakten", at_legevakt)):
        missing = chaos.accepted - set(got)
        twice = [m for m, n in got.items() if n > 1]
        assert not missing, f"{name} is missing {len(missing)} accepted messages{drain}"
        assert not twice, f"{name} holds {len(twice)} messages more than once"
        assert set(got) <= chaos.accepted
    sent = sent_by_hub(tmp_path / "sio-hub" / "gateway.sqlite")
    assert set(sent) == chaos.accepted and max(sent.values()) == 1, "the hub holds each accepted message once"
    assert settled, "the hub's queue did not drain"
    assert codes == [0, 0], "both gateways shut down cleanly on SIGTERM"
    # then the chaos itself - what the design guarantees, whatever the machine's speed
    assert chaos.kills_while_submitting >= 1, "the first kill falls while messages are being submitted"
    with sqlite3.connect(tmp_path / "st-olavs" / "gateway.sqlite") as conn:
        redelivered = conn.execute(
            "SELECT COALESCE(SUM(duplicates), 0) FROM messages WHERE direction = 'in'"
        ).fetchone()
    print(
        f"kills {chaos.kills} ({chaos.kills_while_submitting} while submitting); duplicates caught by St. Olavs: "
        f"{redelivered[0]}; " + ", ".join(f"{what} {seconds:.0f} s" for what, seconds in took.items())
    )

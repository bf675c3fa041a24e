"""A peer down for a while: messages wait with growing intervals (no hot loop), the route opens once and
closes once, and everything arrives after the peer returns - in lane order.

The hub and a St. Olavs gateway as real aiohttp servers on loopback, joined by the http adapter."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from structlog.testing import capture_logs

from gateway.api.app import create_app
from gateway.api.keys import GATEWAY
from gateway.api.server import app_runner
from gateway.config import PROJECT_ROOT
from gateway.registry import load_register
from gateway.replay import mirror_regions
from gateway.retry import RetryPolicy
from gateway.service import Gateway
from gateway.store.base import DeliveryRecord, DeliveryState

from .region import ADMIN, fixture_bytes, settings_for, with_msg_id

TEMPLATE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> St. Olavs (+ LiO)
RETRY = {"base_s": 0.2, "factor": 2.0, "cap_s": 1.6, "breaker_threshold": 3}
POLICY = RetryPolicy(base_s=0.2, factor=2.0, cap_s=1.6)
FAILED_ATTEMPTS = 5  # the head fails this often (the route goes down at the third) before St. Olavs returns
STUCK_S = 60.0  # a wait for a condition gives up only after this long: then something is stuck, not slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(gateway: Gateway, port: int) -> web.AppRunner:
    runner = app_runner(create_app(gateway))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for ``condition`` - however long a busy machine needs, up to STUCK_S."""
    deadline = time.monotonic() + STUCK_S
    while not await condition():
        assert time.monotonic() < deadline, f"stuck: {what} did not happen within {STUCK_S} s"
        await asyncio.sleep(0.05)


async def test_outage_then_recovery_in_order(tmp_path: Path) -> None:
    """Ten messages in one lane while St. Olavs is down; then it returns and they arrive in order."""
    hub_port, st_port = free_port(), free_port()
    hub_reg, st_reg = mirror_regions(
        load_register(PROJECT_ROOT / "config" / "sio-region.toml"),
        hub_endpoint=f"http://127.0.0.1:{hub_port}/transport/http",
        stolav_endpoint=f"http://127.0.0.1:{st_port}/transport/http",
    )
    none = {"protection": "none"}

    def stolav() -> Gateway:
        return Gateway(settings_for(tmp_path / "stolav", security=none), register=st_reg)

    # a seeded jitter: the waits drawn depend only on how many attempts failed, not on when
    hub = Gateway(settings_for(tmp_path / "hub", security=none, retry=RETRY), register=hub_reg, rng=random.Random(7))
    msg_ids = [str(uuid.uuid4()) for _ in range(10)]
    with capture_logs() as logs:
        hub_runner = await serve(hub, hub_port)
        st_runner = await serve(stolav(), st_port)
        await st_runner.cleanup()  # St. Olavs goes down
        records = []
        for msg_id in msg_ids:
            body = with_msg_id(fixture_bytes(TEMPLATE), msg_id)
            records.append((await hub.submit(body, ADMIN))[0])

        async def remote() -> list[DeliveryRecord]:
            views = [await hub.store.get(r.id) for r in records]
            return [next(d for d in v.deliveries if d.receiver_her == "7200101") for v in views if v]

        async def head_failed_enough() -> bool:
            head = (await remote())[0]
            return head.attempts >= FAILED_ATTEMPTS and head.state == DeliveryState.RETRYING

        await until(head_failed_enough, f"{FAILED_ATTEMPTS} failed attempts of the head")
        down = await remote()
        assert "route.down" in [e["event"] for e in logs]
        assert all(d.attempts == 0 and d.state == DeliveryState.QUEUED for d in down[1:])  # the lane is held
        st_runner = await serve(stolav(), st_port)  # St. Olavs is back

        async def all_acknowledged() -> bool:
            views = [await hub.store.get(r.id) for r in records]
            return all(v and all(d.state == DeliveryState.ACKNOWLEDGED for d in v.deliveries) for v in views)

        await until(all_acknowledged, "every delivery acknowledged after St. Olavs returned")
        arrived = await st_runner.app[GATEWAY].store.list_messages(
            direction="in", kind="plo-innleggelsesrapport-1.6", limit=100
        )
        first = await hub.store.get(records[0].id)
        await st_runner.cleanup()
        await hub_runner.cleanup()
    assert [m.msg_id for m in reversed(arrived.items)] == msg_ids  # oldest first: the order they were accepted
    events = [e["event"] for e in logs]
    assert events.count("route.down") == 1 and events.count("route.up") == 1
    assert first is not None
    retries = [t for t in first.trace if t.event == "delivery.retrying" and t.receiver_her == "7200101"]
    assert len(retries) >= FAILED_ATTEMPTS
    waits = [t.detail["next_attempt_at"] - t.at for t in retries]
    # no hot loop: each wait is within the policy's jitter band, and no attempt came before its time
    for n, wait in enumerate(waits, start=1):
        assert POLICY.base_s / 10 - 0.01 <= wait <= POLICY.ceiling(n) + 0.01, (n, wait)
    for before, after in itertools.pairwise(retries):
        assert after.at >= before.detail["next_attempt_at"] - 0.01, "an attempt went before its scheduled time"
    assert max(waits) > 4 * min(waits)  # the intervals grew

"""A peer down for a while: messages wait with growing intervals (no hot loop), the route opens once and
closes once, and everything arrives after the peer returns - in lane order.

The hub and a St. Olavs gateway as real aiohttp servers on loopback, joined by the http adapter."""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from pathlib import Path

from aiohttp import web
from structlog.testing import capture_logs

from gateway.api.app import create_app
from gateway.api.keys import GATEWAY
from gateway.config import PROJECT_ROOT
from gateway.registry import load_register
from gateway.replay import mirror_regions
from gateway.service import Gateway
from gateway.store.base import DeliveryState

from .region import ADMIN, fixture_bytes, settings_for, with_msg_id

TEMPLATE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> St. Olavs (+ LiO)
DOWN_S = 4.0
RETRY = {"base_s": 0.2, "factor": 2.0, "cap_s": 1.6, "breaker_threshold": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(gateway: Gateway, port: int) -> web.AppRunner:
    runner = web.AppRunner(create_app(gateway), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


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
        await asyncio.sleep(DOWN_S)
        views = [await hub.store.get(r.id) for r in records]
        remote = [next(d for d in v.deliveries if d.receiver_her == "7200101") for v in views if v]
        head, rest = remote[0], remote[1:]
        assert head.state == DeliveryState.RETRYING
        assert 3 <= head.attempts <= 12, head.attempts  # backoff, not a hot loop (poll is 0.05 s)
        assert all(d.attempts == 0 and d.state == DeliveryState.QUEUED for d in rest)  # the lane is held
        st_runner = await serve(stolav(), st_port)  # St. Olavs is back
        for _ in range(200):
            views = [await hub.store.get(r.id) for r in records]
            if all(v and all(d.state == DeliveryState.ACKNOWLEDGED for d in v.deliveries) for v in views):
                break
            await asyncio.sleep(0.1)
        arrived = await st_runner.app[GATEWAY].store.list_messages(
            direction="in", kind="plo-innleggelsesrapport-1.6", limit=100
        )
        await st_runner.cleanup()
        await hub_runner.cleanup()
    assert all(v and all(d.state == DeliveryState.ACKNOWLEDGED for d in v.deliveries) for v in views)
    assert [m.msg_id for m in reversed(arrived.items)] == msg_ids  # oldest first: the order they were accepted
    events = [e["event"] for e in logs]
    assert events.count("route.down") == 1 and events.count("route.up") == 1
    first = views[0]
    assert first is not None
    waits = [t.detail["next_attempt_at"] - t.at for t in first.trace if t.event == "delivery.retrying"]
    assert len(waits) >= 3 and max(waits) > 4 * min(waits)  # the intervals grew

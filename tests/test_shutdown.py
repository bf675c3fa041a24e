"""Graceful shutdown: the worker stops claiming, lets an in-flight send finish within the grace period,
and gives back the lease of a send that outlives it, so the next worker takes it up at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.store.base import DeliveryRecord, DeliveryState
from gateway.transport import InboundResult, Packet

from .region import ADMIN, fixture_bytes, region, with_msg_id

if TYPE_CHECKING:
    from .region import TestRegion

TEMPLATE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> St. Olavs (+ LiO)
STOLAV = "7200101"


async def _stolav_delivery(r: TestRegion, message_id: str) -> DeliveryRecord:
    view = await r.hub.store.get(message_id)
    assert view is not None
    return next(d for d in view.deliveries if d.receiver_her == STOLAV)


async def test_in_flight_send_finishes_within_the_grace_period(tmp_path: Path) -> None:
    async with region(tmp_path) as r:
        entered = asyncio.Event()

        async def slow(packet: Packet) -> InboundResult:
            entered.set()
            await asyncio.sleep(0.3)
            return InboundResult(True)

        r.network.attach("memory://stolav", slow)
        record, _ = await r.hub.submit(fixture_bytes(TEMPLATE), ADMIN)
        assert await r.hub.worker.run_once() > 0
        await asyncio.wait_for(entered.wait(), timeout=5)
        await r.hub.worker.stop()  # mid-send
        remote = await _stolav_delivery(r, record.id)
        assert remote.state == DeliveryState.SENT and remote.attempts == 1
        # stopped means no more claiming: a message submitted now waits for the next worker
        later, _ = await r.hub.submit(with_msg_id(fixture_bytes(TEMPLATE)), ADMIN)
        assert await r.hub.worker.run_once() == 0
        assert (await _stolav_delivery(r, later.id)).state == DeliveryState.QUEUED


async def test_send_outliving_the_grace_period_is_released(tmp_path: Path) -> None:
    async with region(tmp_path) as r:  # the region's grace period is 2 s
        entered, never = asyncio.Event(), asyncio.Event()

        async def stuck(packet: Packet) -> InboundResult:
            entered.set()
            await never.wait()
            return InboundResult(True)

        r.network.attach("memory://stolav", stuck)
        record, _ = await r.hub.submit(fixture_bytes(TEMPLATE), ADMIN)
        await r.hub.worker.run_once()
        await asyncio.wait_for(entered.wait(), timeout=5)
        await asyncio.wait_for(r.hub.worker.stop(), timeout=10)
        remote = await _stolav_delivery(r, record.id)
        assert remote.state == DeliveryState.QUEUED and remote.attempts == 0  # the cut-off attempt is not counted
        claims = await r.hub.store.claim_due(owner="next", now=r.clock.now(), limit=10, lease_s=60)
        assert STOLAV in {c.delivery.receiver_her for c in claims}  # no lease to wait out

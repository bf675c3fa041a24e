"""What NHN reports of a message after it took it, mapped onto the queue: the receiver's system rejected it
(``Rejected``: dead, with NHN's reason), or NHN gave up on the receiver (``Abandoned``: dead, or sent again
when the route's policy says ``abandoned = "retry"``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.config import RouteSettings
from gateway.store.base import DeliveryRecord, DeliveryState
from gateway.testing.nhn.peers import PeerScript

from ..region import ADMIN, fixture_bytes, with_msg_id
from .nhn_region import NhnRegion, nhn_region

TO_STOLAV = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> 7200101, copy to LiO
STOLAV = "7200101"

both_versions = pytest.mark.parametrize("api_version", ["3", "2"])


async def delivery_to_stolav(r: NhnRegion, message_id: str) -> DeliveryRecord:
    view = await r.hub.store.get(message_id)
    assert view is not None
    return next(d for d in view.deliveries if d.receiver_her == STOLAV)


async def until_state(r: NhnRegion, message_id: str, state: DeliveryState) -> DeliveryRecord:
    async def reached() -> bool:
        return (await delivery_to_stolav(r, message_id)).state == state

    await r.until(reached, what=f"the delivery to St. Olavs {state}")
    return await delivery_to_stolav(r, message_id)


@both_versions
async def test_a_transport_rejection_is_a_dead_letter_with_nhns_reason(tmp_path: Path, api_version: str) -> None:
    async with nhn_region(tmp_path, api_version=api_version) as r:
        why = "ebXML MessageError: the receiver's CPA does not allow this service"
        r.sim.network.peer(STOLAV).script = PeerScript(transport="Rejected", reason=why, apprec=None)
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)

        dead = await until_state(r, record.id, DeliveryState.DEAD)
        assert dead.last_error_code == "delivery.refused"
        assert dead.last_error is not None and "rejected by the receiver's system" in dead.last_error
        if api_version == "3":  # v3's notification carries NHN's description; v2's status has only the state
            assert why in dead.last_error
        view = await r.hub.store.get(record.id)
        assert view is not None
        assert any(t.event == "delivery.dead" and t.detail.get("code") == "delivery.refused" for t in view.trace)
        assert len(r.sim.network.peer(STOLAV).received) == 1


async def test_an_abandoned_delivery_is_dead_by_default(tmp_path: Path) -> None:
    async with nhn_region(tmp_path, api_version="3") as r:
        r.sim.network.peer(STOLAV).script = PeerScript(transport="Abandoned", apprec=None)
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)

        dead = await until_state(r, record.id, DeliveryState.DEAD)
        assert dead.last_error_code == "delivery.abandoned"
        assert dead.last_error is not None and "abandoned" in dead.last_error
        for _ in range(3):  # nothing sends it again by itself
            await r.hub.worker.drain()
        assert len(r.sim.network.peer(STOLAV).received) == 1


async def test_an_abandoned_delivery_is_sent_again_when_the_route_says_retry(tmp_path: Path) -> None:
    routes = {"routes": {STOLAV: RouteSettings(abandoned="retry")}}
    async with nhn_region(tmp_path, api_version="3", sections={"retry": routes}) as r:
        peer = r.sim.network.peer(STOLAV)
        peer.script = PeerScript(transport="Abandoned", apprec=None)
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)

        waiting = await until_state(r, record.id, DeliveryState.RETRYING)
        assert waiting.last_error_code == "delivery.abandoned" and waiting.next_attempt_at is not None
        peer.script = PeerScript()  # the receiver is back: it acknowledges and answers OK
        clock = r.hub.clock
        assert isinstance(clock, ManualClock)
        clock.advance(waiting.next_attempt_at - clock.now())

        acknowledged = await until_state(r, record.id, DeliveryState.ACKNOWLEDGED)
        assert acknowledged.apprec is not None and acknowledged.apprec.status == "1"
        first, second = peer.received  # sent twice: the same document, two NHN messages
        assert first.info.msg_id == second.info.msg_id == record.msg_id and first.id != second.id


async def test_v2_cannot_tell_an_abandoned_delivery_from_an_unconfirmed_one(tmp_path: Path) -> None:
    """v2's DeliveryState has no Abandoned: the delivery stays sent, and its receipt deadline (overdue) is
    what tells the operator."""
    async with nhn_region(tmp_path, api_version="2") as r:
        peer = r.sim.network.peer(STOLAV)
        peer.script = PeerScript(transport="Abandoned", apprec=None)
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)

        async def abandoned_at_nhn() -> bool:
            return any(d.state == "Abandoned" for m in r.sim.state.messages.values() for d in m.deliveries.values())

        await r.until(abandoned_at_nhn, what="NHN gives up on St. Olavs")
        for _ in range(5):  # the v2 poll (every 50 ms) sees Unconfirmed, again and again
            await r.hub.worker.drain()
            r.sim.advance(1.0)
            await asyncio.sleep(0.1)
        assert (await delivery_to_stolav(r, record.id)).state == DeliveryState.SENT

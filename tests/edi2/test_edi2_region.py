"""The gateway against a local NHN, both API versions: a message to St. Olavs goes all the way (accepted ->
sent -> transport acknowledged -> AppRec settles it), St. Olavs' own message reaches the GP's inbox once
and its AppRec goes back as NHN's apprec call."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.store.base import DeliveryState
from gateway.testing.nhn.msh_state import AppRecErrorInfo
from gateway.testing.nhn.peers import PeerScript

from ..region import ADMIN, fixture_bytes, with_msg_id
from .nhn_region import nhn_region

TO_STOLAV = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> 7200101, copy to LiO
EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # 7200101 -> GP 7102001, copy to Frøya
STOLAV, GP = "7200101", "7102001"

pytestmark = pytest.mark.parametrize("api_version", ["3", "2"])


async def test_a_message_to_st_olavs_is_acknowledged_through_nhn(tmp_path: Path, api_version: str) -> None:
    async with nhn_region(tmp_path, api_version=api_version) as r:
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)

        async def settled() -> bool:
            view = await r.hub.store.get(record.id)
            return view is not None and all(d.state == DeliveryState.ACKNOWLEDGED for d in view.deliveries)

        await r.until(settled, what="both deliveries acknowledged")
        view = await r.hub.store.get(record.id)
        assert view is not None
        remote = next(d for d in view.deliveries if d.receiver_her == STOLAV)
        assert remote.channel == "edi2" and remote.apprec is not None and remote.apprec.status == "1"
        (received,) = r.sim.network.peer(STOLAV).received
        assert received.info.msg_id == record.msg_id  # the document NHN passed on is the one we accepted


async def test_a_rejecting_apprec_from_st_olavs_settles_it_rejected(tmp_path: Path, api_version: str) -> None:
    async with nhn_region(tmp_path, api_version=api_version) as r:
        r.sim.network.peer(STOLAV).script = PeerScript(
            apprec="Rejected", apprec_errors=(AppRecErrorInfo("E35", "Pasienten finnes ikke"),)
        )
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)

        async def rejected() -> bool:
            view = await r.hub.store.get(record.id)
            return view is not None and any(d.state == DeliveryState.REJECTED for d in view.deliveries)

        await r.until(rejected, what="the delivery to St. Olavs rejected")
        view = await r.hub.store.get(record.id)
        assert view is not None
        remote = next(d for d in view.deliveries if d.receiver_her == STOLAV)
        assert remote.apprec is not None and remote.apprec.errors[0][0] == "E35"


async def test_st_olavs_message_reaches_the_inbox_once_and_is_answered(tmp_path: Path, api_version: str) -> None:
    async with nhn_region(tmp_path, api_version=api_version) as r:
        sent = r.sim.network.send(STOLAV, fixture_bytes(EPIKRISE), to=[GP])

        async def in_inbox() -> bool:
            return len(await r.hub.store.inbox(GP)) == 1

        await r.until(in_inbox, what="the epikrise in the GP's inbox")

        async def answered() -> bool:
            delivery = r.sim.state.messages[sent.id].deliveries[GP]
            return delivery.downloaded and delivery.apprec is not None

        await r.until(answered, what="NHN's apprec call for the epikrise")
        delivery = r.sim.state.messages[sent.id].deliveries[GP]
        assert delivery.apprec is not None and delivery.apprec.status == "Ok"
        for _ in range(5):  # redelivery from the log (or the unread list) does not make a second inbox entry
            await r.hub.worker.drain()
        assert len(await r.hub.store.inbox(GP)) == 1

"""What NHN or a peer hands the gateway that it cannot take as it is: a notification about a message NHN no
longer has (skipped, loudly - the rest of the region's inbound goes on), a message the gateway refuses (the
sender is told, through NHN's AppRec), a document without an encoding declaration (NHN gets one), and an
access token NHN refuses twice (retried, never a dead letter)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.store.base import DeliveryState
from gateway.testing.nhn.peers import PeerScript

from ..region import ADMIN, fixture_bytes, with_msg_id
from .nhn_region import NhnRegion, nhn_region

TO_STOLAV = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> 7200101, copy to LiO
EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # 7200101 -> GP 7102001, copy to Frøya
STOLAV, GP = "7200101", "7102001"

both_versions = pytest.mark.parametrize("api_version", ["3", "2"])


async def to_stolav(r: NhnRegion, message_id: str) -> DeliveryState:
    view = await r.hub.store.get(message_id)
    assert view is not None
    return next(d.state for d in view.deliveries if d.receiver_her == STOLAV)


@both_versions
async def test_a_message_nhn_cannot_give_is_skipped_and_the_next_ones_come(tmp_path: Path, api_version: str) -> None:
    """NHN keeps answering 404 for one message's document (``skip_after_s`` 0 here; 10 minutes by default)."""
    async with nhn_region(tmp_path, api_version=api_version, adapter_options={"skip_after_s": 0}) as r:
        lost = r.sim.network.send(STOLAV, with_msg_id(fixture_bytes(EPIKRISE)), to=[GP])
        prefix = "/messages" if api_version == "3" else "/Messages"
        r.sim.faults.fail(404, times=1000, path=f"{prefix}/{lost.id}/business-document")
        following = r.sim.network.send(STOLAV, with_msg_id(fixture_bytes(EPIKRISE)), to=[GP])

        with capture_logs() as logs:

            async def next_one_in() -> bool:
                return [m.msg_id for m in await r.hub.store.inbox(GP)] == [following.info.msg_id]

            await r.until(next_one_in, what="the epikrise after the one NHN cannot give")
        skipped = [e for e in logs if e["event"] == "edi2.notification_skipped"]
        assert skipped and skipped[0]["nhn_message_id"] == lost.id and skipped[0]["log_level"] == "error"
        assert not r.sim.state.messages[lost.id].deliveries[GP].downloaded  # NHN still has it


async def test_a_few_404s_from_a_proxy_skip_nothing(tmp_path: Path) -> None:
    """NHN's maintenance: a proxy answers 404 for a while - the message waits for NHN, it is not skipped."""
    async with nhn_region(tmp_path) as r:
        sent = r.sim.network.send(STOLAV, with_msg_id(fixture_bytes(EPIKRISE)), to=[GP])
        r.sim.faults.fail(404, times=8, path=f"/messages/{sent.id}/business-document")

        async def in_inbox() -> bool:
            return [m.msg_id for m in await r.hub.store.inbox(GP)] == [sent.info.msg_id]

        await r.until(in_inbox, what="the epikrise once NHN answers again")
        met = [a for a in r.sim.faults.applied if a.endswith(f"{sent.id}/business-document")]
        assert len(met) == 8  # every 404 was met, and the message came after all


@both_versions
async def test_a_message_the_gateway_refuses_is_answered_through_nhn(tmp_path: Path, api_version: str) -> None:
    async with nhn_region(tmp_path, api_version=api_version) as r:
        not_kith = b'<?xml version="1.0" encoding="UTF-8"?><Melding><Innhold>ukjent</Innhold></Melding>'
        sent = r.sim.network.send(STOLAV, not_kith, to=[GP])

        async def answered() -> bool:
            delivery = r.sim.state.messages[sent.id].deliveries[GP]
            return delivery.downloaded and delivery.apprec is not None

        await r.until(answered, what="NHN's AppRec for the refused message")
        apprec = r.sim.state.messages[sent.id].deliveries[GP].apprec
        assert apprec is not None and apprec.status == "Rejected"
        assert [e.error_code for e in apprec.errors] == ["T10"]
        assert await r.hub.store.inbox(GP) == []
        (refusal,) = await r.hub.store.refusals()
        assert refusal.transport_message_id == sent.id and refusal.via == "edi2"


async def test_a_document_without_a_declaration_reaches_nhn_declared_utf8(tmp_path: Path) -> None:
    async with nhn_region(tmp_path) as r:
        body = with_msg_id(fixture_bytes(TO_STOLAV))
        undeclared = body[body.index(b"?>") + 2 :].lstrip()
        record, _ = await r.hub.submit(undeclared, ADMIN)

        async def acknowledged() -> bool:
            return await to_stolav(r, record.id) == DeliveryState.ACKNOWLEDGED

        await r.until(acknowledged, what="the undeclared document acknowledged by St. Olavs")
        (received,) = r.sim.network.peer(STOLAV).received
        assert received.document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')


async def test_a_token_nhn_refuses_twice_is_retried_not_dead(tmp_path: Path) -> None:
    async with nhn_region(tmp_path) as r:
        r.sim.faults.expire_token(times=2, path="/messages", method="POST")
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)
        await r.hub.worker.drain()
        view = await r.hub.store.get(record.id)
        assert view is not None
        remote = next(d for d in view.deliveries if d.receiver_her == STOLAV)
        assert remote.state == DeliveryState.RETRYING and remote.last_error_code == "delivery.authentication_refused"
        r.hub.clock.advance(3600)  # type: ignore[attr-defined]

        async def acknowledged() -> bool:
            return await to_stolav(r, record.id) == DeliveryState.ACKNOWLEDGED

        await r.until(acknowledged, what="the message through at the next attempt")


async def test_v2_stops_polling_the_status_of_a_message_nhn_no_longer_knows(tmp_path: Path) -> None:
    async with nhn_region(tmp_path, api_version="2") as r:
        r.sim.network.peer(STOLAV).script = PeerScript(apprec=None)  # acknowledged, never answered
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)

        async def polled() -> bool:
            return bool(await r.hub.transports["edi2"].ledger.pending())  # type: ignore[attr-defined]

        await r.until(polled, what="the message on v2's status list")
        (nhn_id,) = await r.hub.transports["edi2"].ledger.pending()  # type: ignore[attr-defined]
        r.sim.faults.fail(404, times=1000, path=f"/Messages/{nhn_id}/status")

        with capture_logs() as logs:

            async def dropped() -> bool:
                return not await r.hub.transports["edi2"].ledger.pending()  # type: ignore[attr-defined]

            await r.until(dropped, what="the message off the status list")
        assert any(e["event"] == "edi2.status_unavailable" and e["nhn_message_id"] == nhn_id for e in logs)
        assert await to_stolav(r, record.id) == DeliveryState.SENT  # still waiting for its AppRec


async def test_what_a_refused_document_says_of_itself_is_kept_and_told_bounded(tmp_path: Path) -> None:
    """A refusal quotes the document's root (its name and namespace): a megabyte of namespace costs the
    refusal record and the AppRec's text a few hundred characters, not a megabyte."""
    async with nhn_region(tmp_path) as r:
        document = f'<?xml version="1.0" encoding="UTF-8"?><M xmlns="urn:{"x" * 1_000_000}"/>'
        sent = r.sim.network.send(STOLAV, document.encode(), to=[GP])

        async def answered() -> bool:
            return r.sim.state.messages[sent.id].deliveries[GP].apprec is not None

        await r.until(answered, what="NHN's AppRec for the refused message")
        (refusal,) = await r.hub.store.refusals()
        assert "urn:xxx" in refusal.reason and len(refusal.reason) < 1000
        apprec = r.sim.state.messages[sent.id].deliveries[GP].apprec
        assert apprec is not None and len(apprec.errors[0].details or "") < 1000

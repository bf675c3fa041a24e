"""The whole message flow in one process: accept, route, deliver, receive, answer, correlate.

Two gateways (the hub and a simulated St. Olavs) joined by the memory adapter, real SQLite stores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import Conflict, Forbidden, SchemaInvalid, UnknownReceiver
from gateway.pipeline.outbound import Client
from gateway.store.base import DeliveryState, MessageState
from gateway.transport import Packet

from .conftest import require_shared
from .region import ADMIN, fixture_bytes, manifest_entry, region

EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"
FORESPORSEL = "dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml"
INNLEGGELSE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"


class TestOutbound:
    async def test_remote_message_is_acknowledged_by_each_receiver(self, tmp_path: Path) -> None:
        """Innleggelsesrapport to St. Olavs with a copy to the legevakt: one delivery each, each answered."""
        async with region(tmp_path) as r:
            record, created = await r.hub.submit(fixture_bytes(INNLEGGELSE), ADMIN)
            assert created and record.state == MessageState.QUEUED
            await r.drain()
            view = await r.hub.store.get(record.id)
            assert view is not None
            states = {d.receiver_her: (d.channel, d.state, d.role) for d in view.deliveries}
            assert states == {
                "7200101": ("memory", DeliveryState.ACKNOWLEDGED, "PRIM"),
                "7103001": ("local", DeliveryState.ACKNOWLEDGED, "COP"),
            }
            assert view.message.state == MessageState.ACKNOWLEDGED
            events = [t.event for t in view.trace]
            assert events.count("apprec.acknowledged") == 2

    async def test_resubmission_returns_the_first_record(self, tmp_path: Path) -> None:
        """The same (sender, MsgId) again is the same message: no second delivery."""
        async with region(tmp_path) as r:
            first, _ = await r.hub.submit(fixture_bytes(FORESPORSEL), ADMIN)
            again, created = await r.hub.submit(fixture_bytes(FORESPORSEL), ADMIN)
            assert not created and again.id == first.id and again.duplicates == 1

    async def test_same_msgid_other_content_is_a_conflict(self, tmp_path: Path) -> None:
        """Reusing a MsgId for different content is refused; every message needs its own MsgId."""
        async with region(tmp_path) as r:
            await r.hub.submit(fixture_bytes(FORESPORSEL), ADMIN)
            changed = fixture_bytes(FORESPORSEL).replace(b"</Dialogmelding>", b"<!-- x --></Dialogmelding>")
            with pytest.raises(Conflict):
                await r.hub.submit(changed, ADMIN)

    async def test_sender_must_be_local_and_allowed(self, tmp_path: Path) -> None:
        """A client may only send for its own parties, and only for parties this hub serves."""
        async with region(tmp_path) as r:
            with pytest.raises(Forbidden):
                await r.hub.submit(fixture_bytes(FORESPORSEL), Client("froya", frozenset({"7100101"})))
            with pytest.raises(Forbidden):  # an Epikrise from St. Olavs is not the hub's to send
                await r.hub.submit(fixture_bytes(EPIKRISE), ADMIN)

    async def test_refusals_carry_their_code(self, tmp_path: Path) -> None:
        """Broken fixtures are refused with the manifest's code, and nothing is stored."""
        async with region(tmp_path) as r:
            with pytest.raises(UnknownReceiver):
                await r.hub.submit(fixture_bytes("broken/unknown-receiver.xml"), ADMIN)
            assert await r.hub.store.counts() == {}
            require_shared()  # the fault is in the PLO content: only the official PLO schema finds it
            with pytest.raises(SchemaInvalid):
                await r.hub.submit(fixture_bytes("broken/schema-invalid.xml"), ADMIN)
            assert await r.hub.store.counts() == {}


class TestInbound:
    async def packet(self, r, name: str, *, to: str | None = None) -> Packet:  # type: ignore[no-untyped-def]
        entry = manifest_entry(name)
        return Packet(
            body=fixture_bytes(name),
            message_id="t-1",
            from_her=entry["sender"],
            to_her=to or entry["receivers"][0],
            content_type="application/xml",
            subject="",
        )

    async def test_duplicate_is_delivered_and_answered_once(self, tmp_path: Path) -> None:
        """The same message twice from a transport: one EHR delivery, one AppRec, the second counted."""
        async with region(tmp_path) as r:
            packet = await self.packet(r, EPIKRISE)
            first = await r.hub.receive(packet, via="memory")
            second = await r.hub.receive(packet, via="memory")
            assert first.accepted and second.accepted and first.reference == second.reference
            view = await r.hub.store.get(first.reference or "")
            assert view is not None and view.message.duplicates == 1
            assert [d.state for d in view.deliveries] == [DeliveryState.INBOX]
            assert [t.event for t in view.trace].count("apprec.queued") == 1
            assert "message.duplicate" in [t.event for t in view.trace]

    async def test_copy_receiver_answers_for_itself(self, tmp_path: Path) -> None:
        """The primary receiver and the copy receiver each store their own copy and send their own AppRec."""
        async with region(tmp_path) as r:
            record, _ = await r.stolav.submit(fixture_bytes(EPIKRISE), ADMIN)
            await r.drain()
            inbox_gp = await r.hub.store.inbox("7102001")
            inbox_froya = await r.hub.store.inbox("7100101")
            assert len(inbox_gp) == 1 and len(inbox_froya) == 1
            view = await r.stolav.store.get(record.id)
            assert view is not None
            assert {d.receiver_her: d.state for d in view.deliveries} == {
                "7102001": DeliveryState.ACKNOWLEDGED,
                "7100101": DeliveryState.ACKNOWLEDGED,
            }

    async def test_misaddressed_gets_no_apprec(self, tmp_path: Path) -> None:
        """A message for a party of another organisation is kept as misaddressed and not answered."""
        async with region(tmp_path) as r:
            body = fixture_bytes(FORESPORSEL).replace(b"7102001", b"7999999").replace(b"7102000", b"7999990")
            packet = Packet(
                body=body,
                message_id="t",
                from_her="7100201",
                to_her="7999999",
                content_type="application/xml",
                subject="",
            )
            result = await r.hub.receive(packet, via="memory")
            assert result.accepted
            view = await r.hub.store.get(result.reference or "")
            assert view is not None and view.message.state == MessageState.MISADDRESSED
            assert not any(t.event == "apprec.queued" for t in view.trace)

    async def test_sender_metadata_mismatch_is_spoofing(self, tmp_path: Path) -> None:
        """The transport's sender must be the message's sender (abuse:spoofing-attack)."""
        async with region(tmp_path) as r:
            packet = await self.packet(r, EPIKRISE)
            forged = Packet(packet.body, "t", "7200201", packet.to_her, packet.content_type, "")
            result = await r.hub.receive(forged, via="memory")
            assert not result.accepted and result.condition == "abuse:spoofing-attack"

    async def test_rejected_message_gets_negative_apprec(self, tmp_path: Path) -> None:
        """A received message with a bad MsgId is stored rejected and answered E10 in the same breath."""
        async with region(tmp_path) as r:
            packet = await self.packet(r, "broken/bad-msgid.xml")
            result = await r.hub.receive(packet, via="memory")
            view = await r.hub.store.get(result.reference or "")
            assert view is not None and view.message.state == MessageState.REJECTED
            assert view.message.error_code == "E10" and not view.deliveries
            apprec_id = next(t.detail["apprec_message_id"] for t in view.trace if t.event == "apprec.queued")
            apprec = await r.hub.store.payload(apprec_id)
            assert apprec is not None and b'V="E10"' in apprec and b'V="2"' in apprec


class TestAttribution:
    async def test_nested_her_id_of_another_party_is_spoofing(self, tmp_path: Path) -> None:
        """St. Olavs cannot pose as Frøya by nesting Frøya's HER-id under its own organisation."""
        async with region(tmp_path) as r:
            body = fixture_bytes(EPIKRISE).replace(b"<Id>7200101</Id>", b"<Id>7100101</Id>", 1)
            packet = Packet(body, "t", "7200101", "7102001", "application/xml", "")
            result = await r.hub.receive(packet, via="memory")
            assert not result.accepted and result.condition == "abuse:spoofing-attack"

    async def test_apprec_settles_only_the_answering_partys_delivery(self, tmp_path: Path) -> None:
        """An AppRec that also names the copy receiver is refused; an honest one settles only its sender's
        delivery, never the copy receiver's."""
        async with region(tmp_path) as r:
            record, _ = await r.stolav.submit(fixture_bytes(EPIKRISE), ADMIN)
            for claim in await r.stolav.store.claim_due(owner="t", now=r.clock.now(), limit=10, lease_s=60):
                await r.stolav.store.mark_sent(claim.delivery.id, owner="t", now=r.clock.now(), reason="test")
            mixed = _apprec_from(r, answering_her="7102001", naming="7100101")
            refused = await r.stolav.receive(Packet(mixed, "a", "7102001", "7200101", "application/xml", ""), via="m")
            assert not refused.accepted and refused.condition == "abuse:spoofing-attack"
            honest = _apprec_from(r, answering_her="7102001", naming=None)
            assert (
                await r.stolav.receive(Packet(honest, "b", "7102001", "7200101", "application/xml", ""), via="m")
            ).accepted
            view = await r.stolav.store.get(record.id)
            assert view is not None
            states = {d.receiver_her: d.state for d in view.deliveries}
            assert states == {"7102001": DeliveryState.ACKNOWLEDGED, "7100101": DeliveryState.SENT}


def _apprec_from(r, *, answering_her: str, naming: str | None) -> bytes:  # type: ignore[no-untyped-def]
    """An OK AppRec from the GP to St. Olavs; with ``naming`` its Sender also names that party's HER-id."""
    from gateway.model.apprec import build_apprec
    from gateway.model.envelope import Addressee, Ident, Unit, read_envelope
    from gateway.xml import parse

    doc = parse(fixture_bytes(EPIKRISE))
    original = read_envelope(r.hub.core.catalog.identify(doc.root), doc.root)
    units = [Unit("service", "Fastlegene", (Ident(answering_her, "HER"),))]
    if naming:
        units.append(Unit("person", "x", (Ident(naming, "HER"),)))
    answering = Addressee("Orkanger legesenter", (Ident("7102000", "HER"),), tuple(units))
    return build_apprec(original, version="1.1", answering=answering, role="PRIM", status="1")

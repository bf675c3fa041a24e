"""The amqp transport against a real RabbitMQ set up like NHN's Tjenestebuss: what a Helsenorge.Messaging
peer sees of what the gateway sends (every HITS 1216 field), what it gets back when the gateway cannot take
a message (an error-queue report built to the HITS 1216 table, the original accepted), and what the
gateway makes of the peer's reports and AppRecs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from proton import Message

from adapters.amqp.fields import CMS_CONTENT_TYPE, content_type_of
from adapters.amqp.transport import AmqpTransport
from gateway.store.base import DeliveryState
from gateway.testing.rabbit import Broker
from gateway.transport import MemoryState, Packet, TransportContext

from ..region import ADMIN, fixture_bytes, with_msg_id
from .amqp_region import all_acknowledged, amqp_region, bus_options, delivery_to, new_bus, reached
from .raw import nothing_on, peer_message, put, put_bytes, take

EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # St. Olavs 7200101 -> GP 7102001, copy to Frøya
TO_STOLAV = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> 7200101, copy to LiO
STOLAV, GP, SKAUN = "7200101", "7102001", "7100701"


async def test_every_field_of_a_sent_message_is_as_hits_1216_has_it(broker: Broker) -> None:
    namespace, vhost = new_bus(broker, [GP, STOLAV])
    transport = AmqpTransport(TransportContext(options=bus_options(broker, namespace, vhost), state=MemoryState()))
    packet = Packet(
        body=b"\x30\x82 not really CMS, but bytes as they are",
        message_id=str(uuid.uuid4()),
        from_her=GP,
        to_her=STOLAV,
        content_type=CMS_CONTENT_TYPE,
        subject="DIALOG_INNBYGGER_EKONTAKT",
        application_timestamp=datetime(2026, 11, 27, 10, 15, 30, tzinfo=UTC),
        reference="our-message-id",
    )
    async with transport:
        await transport.send(packet)
    message = await take(broker, vhost, f"{STOLAV}_async")
    assert message.id == packet.message_id and isinstance(message.id, str)
    assert message.address == f"{STOLAV}_async"
    assert message.subject == "DIALOG_INNBYGGER_EKONTAKT"
    assert message.reply_to == f"{GP}_async"
    assert message.content_type == "application/pkcs7-mime; smime-type=signed-and-enveloped-data"
    assert message.properties == {
        "fromHerId": GP,
        "toHerId": STOLAV,
        "applicationTimeStamp": "2026-11-27T10:15:30Z",
    }  # strings all, no cpaId without a CPA
    assert message.body == packet.body and message.inferred  # one Data section, the raw bytes
    assert message.durable
    assert message.correlation_id is None


async def test_an_epikrise_crosses_the_bus_to_the_inbox_once_and_its_apprec_comes_back(
    tmp_path: Path, broker: Broker
) -> None:
    async with amqp_region(tmp_path, broker) as r:
        record, _ = await r.stolav.submit(with_msg_id(fixture_bytes(EPIKRISE)), ADMIN)

        async def acknowledged() -> bool:
            return await all_acknowledged(r.stolav, [record.id])

        await r.until(acknowledged, what="both deliveries settled by the hub's AppRecs over the bus")
        view = await r.stolav.store.get(record.id)
        assert view is not None
        assert {d.channel for d in view.deliveries} == {"amqp"}
        assert {d.apprec.status for d in view.deliveries if d.apprec} == {"1"}
        [received] = await r.hub.store.inbox(GP)
        assert received.msg_id == record.msg_id


async def test_a_refused_message_is_reported_on_the_senders_error_queue_and_accepted(
    tmp_path: Path, broker: Broker
) -> None:
    """Garbage and a damaged real packet get the same one condition and words: before the signature verifies,
    nothing tells one failure from another (docs/security.md)."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r:
        good = r.stolav.protection.protect(fixture_bytes(EPIKRISE), sender_her=STOLAV, receiver_her=GP)
        damaged = good[:-40] + bytes(40)
        reports = []
        for body in (b"not a CMS packet at all", damaged):
            sent = peer_message(body, from_her=STOLAV, to_her=GP)
            await put(broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", sent)
            report = await take(broker, r.vhost, f"{STOLAV}_error")
            assert report.properties["originalMessageId"] == sent.id
            reports.append(report)
        for report in reports:
            props = report.properties
            assert props["errorCondition"] == "transport:invalid-cms-pkcs"
            assert props["fromHerId"] == GP and props["toHerId"] == STOLAV  # swapped
            assert report.subject == "EPIKRISE"
            assert datetime.fromisoformat(props["receiverTimeStamp"].replace("Z", "+00:00")).tzinfo is not None
            assert content_type_of(report) is None and report.correlation_id is None and report.reply_to is None
            assert bytes(report.body or b"") == b""
            assert uuid.UUID(str(report.id)) != uuid.UUID(props["originalMessageId"])
        assert reports[0].properties["errorDescription"] == reports[1].properties["errorDescription"]
        assert await nothing_on(broker, r.vhost, f"{GP}_async")  # the originals were accepted, not given back
        assert await nothing_on(broker, r.vhost, f"{GP}_dl")


async def test_missing_header_fields_are_reported_by_name(tmp_path: Path, broker: Broker) -> None:
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r:
        sent = peer_message(b"whatever", from_her=STOLAV, to_her=GP)
        sent.subject = None
        del sent.properties["applicationTimeStamp"]
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", sent)
        report = await take(broker, r.vhost, f"{STOLAV}_error")
        # as Helsenorge.Messaging's ValidateMessageHeader reports it: one condition, its names for the fields
        assert report.properties["errorCondition"] == "transport:invalid-field-value"
        assert report.properties["errorConditionData"] == "Label;applicationTimeStamp"


async def test_a_message_for_another_party_on_this_ones_queue_is_reported(tmp_path: Path, broker: Broker) -> None:
    """toHerId must be the party whose queue it came on: a report (from that party, to the validated sender)
    names the field, and nothing of the message is taken."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r:
        sent = peer_message(b"whatever", from_her=STOLAV, to_her="7100101")
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", sent)
        report = await take(broker, r.vhost, f"{STOLAV}_error")
        assert report.properties["errorCondition"] == "transport:invalid-field-value"
        assert report.properties["errorConditionData"] == "toHerId"
        assert report.properties["fromHerId"] == GP and report.properties["toHerId"] == STOLAV


async def test_a_message_that_will_not_decode_is_dead_lettered_and_the_bus_goes_on(
    tmp_path: Path, broker: Broker
) -> None:
    """An application property that is not UTF-8 cannot be read: rejected into _dl, and the next message on
    the queue is taken as ever (proton's own decoding would have ended the connection's thread)."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r:
        poison = peer_message(b"x", from_her=STOLAV, to_her=GP)
        poison.properties["X-Note"] = "ZZZZ"
        encoded = bytearray(poison.encode())
        at = encoded.find(b"ZZZZ")
        encoded[at : at + 4] = b"\xff\xfe\xfd\xfc"
        await put_bytes(broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", bytes(encoded))

        async def dead_lettered() -> bool:  # (read by count: a test's own proton receiver cannot decode it either)
            return broker.queue_depth(f"{GP}_dl", vhost=r.vhost) == 1

        await r.until(dead_lettered, what="the undecodable message in the GP's dead letters")
        body = r.stolav.protection.protect(fixture_bytes(EPIKRISE), sender_her=STOLAV, receiver_her=GP)
        await put(
            broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", peer_message(body, from_her=STOLAV, to_her=GP)
        )

        async def in_inbox() -> bool:
            return len(await r.hub.store.inbox(GP)) == 1

        await r.until(in_inbox, what="the next epikrise in the GP's inbox")


async def test_a_message_with_no_sender_to_tell_is_dead_lettered(tmp_path: Path, broker: Broker) -> None:
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r:
        sent = peer_message(b"whatever", from_her=STOLAV, to_her=GP)
        del sent.properties["fromHerId"]
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", sent)
        dead = await take(broker, r.vhost, f"{GP}_dl")
        assert dead.id == sent.id


async def test_a_receivers_error_report_fails_the_delivery_with_its_condition(tmp_path: Path, broker: Broker) -> None:
    """St. Olavs (played here) cannot take the hub's message and says so the way Helsenorge.Messaging does:
    a hyphen-less message-id, a non-ISO receiverTimeStamp, no content type, from/to not swapped."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[SKAUN], stolav_her_ids=[]) as r:
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)
        await r.hub.worker.drain()
        original = await take(broker, r.vhost, f"{STOLAV}_async")
        report = _report(
            original,
            "transport:expired-certificate",
            reporter=SKAUN,  # an old library: from/to not swapped
            errorConditionData='{"thumbprint":{"expected":"AB","actual":"CD"}}',
        )
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{SKAUN}_error", report)

        await r.until(reached(r.hub, record.id, STOLAV, DeliveryState.DEAD), what="the delivery to St. Olavs dead")
        delivery = await delivery_to(r.hub, record.id, STOLAV)
        assert delivery is not None and "transport:expired-certificate" in (delivery.last_error or "")


#: HITS 1216 §2.2.3/§2.2.6's error conditions and those Helsenorge.Messaging adds (the spec's "cerificate"
#: spelling is its typo; the library writes "certificate")
_CONDITIONS = (
    "transport:invalid-cms-pkcs",
    "transport:invalid-certificate",
    "transport:expired-certificate",
    "transport:revoked-certificate",
    "transport:decryption-failed",
    "transport:invalid-signature",
    "transport:required-field-missing",
    "transport:invalid-field-value",
    "transport:invalid-encoding",
    "transport:not-well-formed-xml",
    "transport:xml-not-interpretable",
    "transport:unsupported-message",
    "transport:missing-certificate",
    "transport:unverified-certificate",
    "transport:internal-error",
    "transport:revoked-certificate-offline",
)


async def test_every_condition_a_receiver_reports_is_taken_for_its_delivery(tmp_path: Path, broker: Broker) -> None:
    """One delivery per condition of the table, each reported on the hub's error queue as Helsenorge.Messaging
    writes it: each ends dead with its condition in its error - the two temporary ones by the route's
    ``abandoned`` policy (default: dead, as ``delivery.abandoned``), the rest refused for good."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[SKAUN], stolav_her_ids=[]) as r:
        records = {}
        for condition in _CONDITIONS:  # one at a time: each report names the message it is about
            records[condition], _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)
            await r.hub.worker.drain()
            original = await take(broker, r.vhost, f"{STOLAV}_async")
            await put(broker, r.vhost, f"/exchange/{r.namespace}/{SKAUN}_error", _report(original, condition))

        async def all_dead() -> bool:
            for record in records.values():
                if not await reached(r.hub, record.id, STOLAV, DeliveryState.DEAD)():
                    return False
            return True

        await r.until(all_dead, what="every reported delivery dead")
        for condition, record in records.items():
            view = await r.hub.store.get(record.id)
            assert view is not None
            [delivery] = [d for d in view.deliveries if d.receiver_her == STOLAV]
            assert condition in (delivery.last_error or ""), (condition, delivery.last_error)
            temporary = condition in ("transport:internal-error", "transport:revoked-certificate-offline")
            assert (delivery.last_error_code == "delivery.abandoned") == temporary, (condition, delivery)


def _report(original: Message, condition: str, *, reporter: str = STOLAV, **more: str) -> Message:
    """A receiver's error report about ``original`` as Helsenorge.Messaging writes it: a hyphen-less
    message-id, a non-ISO receiverTimeStamp, no content type; ``reporter`` as its fromHerId."""
    return Message(
        body=b"",
        inferred=True,
        id=uuid.uuid4().hex,
        subject=original.subject,
        durable=True,
        properties={
            "fromHerId": reporter,
            "toHerId": SKAUN if reporter == STOLAV else STOLAV,
            "applicationTimeStamp": "2026-11-27T10:00:00Z",
            "originalMessageId": uuid.UUID(str(original.id)).hex,
            "receiverTimeStamp": "11/27/2026 10:00:01",
            "errorCondition": condition,
            "errorDescription": "Kan ikke ta imot meldingen",
            **more,
        },
    )

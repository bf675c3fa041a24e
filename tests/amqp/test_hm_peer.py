"""The gateway against a second implementation of the Tjenestebuss: a peer bot that behaves like NHN's C#
library Helsenorge.Messaging (gateway/testing/hm_peer.py), playing St. Olavs (7200101, a remote party of
the region reached by adapter "amqp") on a real RabbitMQ. The St. Olavs gateway of the region reads no
queues here: the bot is the only one on 7200101's."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from proton import Message
from structlog.testing import capture_logs

from adapters.amqp.fields import CMS_CONTENT_TYPE, content_type_of, read_error
from gateway.errors import SyncTimeout
from gateway.security.protection import SignThenEncrypt
from gateway.store.base import DeliveryState
from gateway.testing.hm_peer import HelsenorgePeer
from gateway.testing.rabbit import DELIVERY_LIMIT, Broker

from ..region import ADMIN, fixture_bytes, with_msg_id
from .amqp_region import AmqpRegion, amqp_region, reached
from .raw import put, take

STOLAV, GP, SKAUN, HITRA = "7200101", "7102001", "7100701", "7100201"
EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # St. Olavs 7200101 -> GP 7102001
TO_STOLAV = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> 7200101, copy to LiO
DIALOG = "dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml"  # Hitra -> GP (re-addressed to St. Olavs here)
GUID_N = re.compile(r"[0-9a-f]{32}")
DOTNET_STAMP = re.compile(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}")


def hm_peer(r: AmqpRegion, **misbehaviour: Any) -> HelsenorgePeer:
    return HelsenorgePeer(
        STOLAV,
        url=r.broker.amqp_url,
        pki=r.pki,
        namespace=r.namespace,
        virtual_host=f"vhost:{r.vhost}",
        **misbehaviour,
    )


def apprecs_for(peer: HelsenorgePeer, msg_id: str) -> list[str | None]:
    """The statuses of the AppRecs the peer received for ``msg_id``."""
    return [m.apprec_status for m in peer.received if m.apprec_for == msg_id]


async def test_the_hub_sends_to_the_hm_peer_which_reads_it_and_acknowledges_it(tmp_path: Path, broker: Broker) -> None:
    async with amqp_region(tmp_path, broker, stolav_her_ids=[]) as r, hm_peer(r) as peer:
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)

        settled = reached(r.hub, record.id, STOLAV, DeliveryState.ACKNOWLEDGED)
        await r.until(settled, what="the delivery to St. Olavs settled by the HM peer's AppRec")
        [taken] = peer.received
        assert (taken.from_her, taken.queue) == (SKAUN, "async")
        assert taken.msg_id == record.msg_id
        assert b"<MsgHead" in taken.xml  # decrypted and verified
        assert [m.subject for m in peer.sent] == ["APPREC"]  # no error report: the fields passed HM's checks
        assert not peer.errors
        view = await r.hub.store.get(record.id)
        assert view is not None
        [delivery] = [d for d in view.deliveries if d.receiver_her == STOLAV]
        assert delivery.channel == "amqp" and delivery.apprec is not None and delivery.apprec.status == "1"


async def test_the_hm_peer_sends_to_a_hub_party_once_and_gets_an_ok_apprec(tmp_path: Path, broker: Broker) -> None:
    async with amqp_region(tmp_path, broker, stolav_her_ids=[]) as r, hm_peer(r) as peer:
        document = with_msg_id(fixture_bytes(EPIKRISE))
        sent = await peer.send(document, GP, subject="EPIKRISE")
        assert str(sent.id) == str(uuid.UUID(str(sent.id)))  # Guid "D"
        [msg_id] = re.findall(rb"<MsgId>([^<]+)</MsgId>", document)

        async def answered() -> bool:
            return apprecs_for(peer, msg_id.decode()) == ["1"]

        await r.until(answered, what="the hub's OK AppRec at the HM peer")
        inbox = await r.hub.store.inbox(GP)
        assert [m.msg_id for m in inbox] == [msg_id.decode()]
        assert not peer.errors


async def test_a_peer_sending_everything_twice_is_stored_once_and_answered_once(tmp_path: Path, broker: Broker) -> None:
    async with amqp_region(tmp_path, broker, stolav_her_ids=[]) as r, hm_peer(r, duplicate=True) as peer:
        document = with_msg_id(fixture_bytes(EPIKRISE))
        await peer.send(document, GP, subject="EPIKRISE")
        [raw_id] = re.findall(rb"<MsgId>([^<]+)</MsgId>", document)
        msg_id = raw_id.decode()

        async def both_taken() -> bool:  # both copies off the GP's queue, and the AppRec back
            depth = await asyncio.to_thread(broker.queue_depth, f"{GP}_async", vhost=r.vhost)
            return depth == 0 and bool(apprecs_for(peer, msg_id))

        await r.until(both_taken, what="both copies taken and the AppRec at the HM peer")
        for _ in range(3):
            await r.hub.worker.drain()

        async def settled_queue() -> bool:  # nothing more for the peer in flight
            return await asyncio.to_thread(broker.queue_depth, f"{STOLAV}_async", vhost=r.vhost) == 0

        await r.until(settled_queue, what="the peer's queue empty")
        assert apprecs_for(peer, msg_id) == ["1"]  # answered once
        assert [m.msg_id for m in await r.hub.store.inbox(GP)] == [msg_id]  # stored once


async def test_garbage_to_the_hm_peer_gets_an_error_report_in_hms_format(tmp_path: Path, broker: Broker) -> None:
    """The report is HM's: a Guid "N" message-id, a .NET invariant-culture receiverTimeStamp, from/to
    swapped, no content type - and the gateway's own reader reads it."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r, hm_peer(r):
        garbage = _request(b"not a CMS packet", from_her=SKAUN, to_her=STOLAV, subject="PLO")
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{STOLAV}_async", garbage)
        report = await take(broker, r.vhost, f"{SKAUN}_error")
        props = _props(report)
        assert GUID_N.fullmatch(str(report.id))
        assert DOTNET_STAMP.fullmatch(props["receiverTimeStamp"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", props["applicationTimeStamp"])
        assert props["originalMessageId"] == garbage.id
        assert props["errorCondition"] == "transport:decryption-failed"
        assert (props["fromHerId"], props["toHerId"]) == (STOLAV, SKAUN)
        assert report.subject == "PLO"
        assert content_type_of(report) is None and report.correlation_id is None and report.reply_to is None
        assert report.body in (b"", None)
        read = read_error(report)
        assert read is not None
        assert read.original_message_id == garbage.id and read.condition == "transport:decryption-failed"
        assert read.receiver_timestamp is not None and (read.from_her, read.to_her) == (STOLAV, SKAUN)

        missing = _request(b"whatever", from_her=SKAUN, to_her=STOLAV, subject="PLO")
        missing.subject = None  # type: ignore[assignment]
        del _props(missing)["applicationTimeStamp"]
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{STOLAV}_async", missing)
        report = await take(broker, r.vhost, f"{SKAUN}_error")
        assert _props(report)["errorCondition"] == "transport:invalid-field-value"
        assert _props(report)["errorConditionData"] == "Label;applicationTimeStamp"


async def test_a_peer_that_never_settles_sends_the_message_to_dl(tmp_path: Path, broker: Broker) -> None:
    async with amqp_region(tmp_path, broker, stolav_her_ids=[]) as r, hm_peer(r, never_settle=True) as peer:
        await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)

        async def dead_lettered() -> bool:
            return await asyncio.to_thread(broker.queue_depth, f"{STOLAV}_dl", vhost=r.vhost) >= 1

        await r.until(dead_lettered, what="the message in St. Olavs' dead letters", within_s=180)
        assert max(peer.deliveries.values()) >= DELIVERY_LIMIT
        assert not peer.received and not peer.sent


async def test_the_hm_peer_answers_a_sync_request_on_its_reply_queue(tmp_path: Path, broker: Broker) -> None:
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r, hm_peer(r) as peer:
        document = _to_stolav(with_msg_id(fixture_bytes(DIALOG)))
        body = r.hub.protection.protect(document, sender_her=HITRA, receiver_her=STOLAV)
        request = _request(body, from_her=HITRA, to_her=STOLAV, subject="DIALOG_HELSEFAGLIG")
        request.reply_to = f"{HITRA}_syncreply"
        request.correlation_id = request.id
        request.ttl = 15
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{STOLAV}_sync", request)
        reply = await take(broker, r.vhost, f"{HITRA}_syncreply")
        assert reply.correlation_id == request.id
        assert reply.id != request.id and str(reply.id) == str(uuid.UUID(str(reply.id)))
        assert reply.subject == "DIALOG_HELSEFAGLIG"
        assert (_props(reply)["fromHerId"], _props(reply)["toHerId"]) == (STOLAV, HITRA)
        assert content_type_of(reply) == CMS_CONTENT_TYPE
        assert isinstance(r.hub.protection, SignThenEncrypt) and isinstance(reply.body, (bytes, memoryview))
        opened = r.hub.protection.open(bytes(reply.body), receiver_her=HITRA, claimed_sender_her=STOLAV)
        judged = r.hub.core.validator.judge(opened.content)
        assert judged.accepted, judged.error
        assert judged.envelope is not None
        assert (judged.envelope.sender_her, judged.envelope.receiver_her) == (STOLAV, HITRA)
        assert judged.envelope.msg_id not in (None, re.findall(rb"<MsgId>([^<]+)</MsgId>", document)[0].decode())
        assert [m.queue for m in peer.received] == ["sync"]  # and no AppRec for a sync message
        assert [m.correlation_id for m in peer.sent] == [request.id]


async def test_the_hubs_ehr_asks_the_hm_peer_and_gets_its_answer(tmp_path: Path, broker: Broker) -> None:
    """The gateway as requester against the second implementation as responder (POST /v1/sync's path)."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[HITRA], stolav_her_ids=[]) as r, hm_peer(r) as peer:
        document = _to_stolav(with_msg_id(fixture_bytes(DIALOG)))
        reply = await r.hub.request(document, ADMIN, timeout_s=60.0)
        assert (reply.from_her, reply.kind) == (STOLAV, "dialogmelding-1.1")
        assert reply.request_msg_id == re.findall(rb"<MsgId>([^<]+)</MsgId>", document)[0].decode()
        [asked] = peer.received
        assert (asked.queue, asked.from_her, asked.xml) == ("sync", HITRA, document)
        assert await r.hub.store.counts() == {}  # nothing queued or stored, no AppRec


async def test_an_hm_peer_answering_too_late_times_the_request_out(tmp_path: Path, broker: Broker) -> None:
    async with (
        amqp_region(tmp_path, broker, hub_her_ids=[HITRA], stolav_her_ids=[]) as r,
        hm_peer(r, late_s=2.0) as peer,
    ):
        with capture_logs() as logs:
            with pytest.raises(SyncTimeout):
                await r.hub.request(_to_stolav(with_msg_id(fixture_bytes(DIALOG))), ADMIN, timeout_s=0.5)

            async def dropped() -> bool:  # the late reply reached the hub's reply queue and was dropped there
                return any(e["event"] == "amqp.sync_reply_unmatched" for e in logs)

            await r.until(dropped, what="the late reply taken and dropped")
        assert len(peer.sent) == 1


async def test_a_sync_request_without_a_reply_queue_is_reported(tmp_path: Path, broker: Broker) -> None:
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r, hm_peer(r):
        body = r.hub.protection.protect(_to_stolav(fixture_bytes(DIALOG)), sender_her=HITRA, receiver_her=STOLAV)
        request = _request(body, from_her=HITRA, to_her=STOLAV, subject="DIALOG_HELSEFAGLIG")
        request.reply_to = None  # type: ignore[assignment]
        request.correlation_id = request.id
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{STOLAV}_sync", request)
        report = await take(broker, r.vhost, f"{HITRA}_error")
        assert _props(report)["errorCondition"] == "transport:invalid-field-value"
        assert _props(report)["errorConditionData"] == "ReplyTo"
        assert _props(report)["originalMessageId"] == request.id


def _props(message: Message) -> dict[str, Any]:
    props = message.properties
    assert isinstance(props, dict)
    return props


def _to_stolav(dialog: bytes) -> bytes:
    """The dialogmelding addressed to St. Olavs, medisinsk avdeling, instead of the GP."""
    return dialog.replace(b"<Id>7102000</Id>", b"<Id>7200000</Id>").replace(b"<Id>7102001</Id>", b"<Id>7200101</Id>")


def _request(body: bytes, *, from_her: str, to_her: str, subject: str) -> Message:
    """A message as a Helsenorge.Messaging sender puts it on the bus (built here by hand)."""
    return Message(
        body=body,
        inferred=True,
        id=str(uuid.uuid4()),
        address=f"{to_her}_async",
        subject=subject,
        reply_to=f"{from_her}_async",
        content_type=CMS_CONTENT_TYPE,
        durable=True,
        properties={"fromHerId": from_her, "toHerId": to_her, "applicationTimeStamp": "2026-11-27T10:00:00Z"},
    )

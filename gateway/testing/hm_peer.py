"""A peer bot that behaves like NHN's C# library Helsenorge.Messaging (HM) on a real RabbitMQ: one
communication party (a HER-id) on the Tjenestebuss, for tests that cross-check the gateway's AMQP transport
against a second implementation of the same spec (nhn-transports.md §2.5). Its wire formats are in
:mod:`gateway.testing.hm_peer_formats`, its CMS in :mod:`gateway.testing.hm_peer_crypto`, what its
application answers in :mod:`gateway.testing.hm_peer_replies`.

What it does, as ``MessageListener.HandleRawMessageAsync`` does:
- reads ``<her>_async``, ``<her>_sync`` and ``<her>_error``;
- checks the header fields (HM's order), then decrypts and verifies; a failure is reported on the sender's
  ``<from>_error`` queue in HM's format, and the original is accepted;
- a repeated AMQP message-id is logged and accepted, with no report and no AppRec; a repeated MsgId gets
  its AppRec once (HITS 1216 §2.2.3-§2.2.4);
- an async business message is recorded in :attr:`HelsenorgePeer.received` and answered with an OK AppRec;
  an AppRec is recorded only;
- a sync request is answered on its ``reply-to`` with the ``correlation-id`` copied, the same subject,
  from/to swapped and a new message-id (no AppRec); a missing or invalid ``reply-to`` is
  ``transport:invalid-field-value`` (HM PR #42);
- error reports on its own error queue are recorded in :attr:`HelsenorgePeer.errors`.

Misbehaviour, per instance: ``never_settle`` (async messages are released, never settled: the broker
dead-letters them to ``_dl`` after its delivery limit), ``late_s`` (sync answers that long late),
``duplicate`` (everything it sends goes twice with the same message-id).

Payloads and national ids are never logged.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from proton import Message

from adapters.amqp.bus import Bus, Incoming
from adapters.amqp.fields import Addresses
from gateway.log import get_logger
from gateway.testing.hm_peer_crypto import PeerCrypto
from gateway.testing.hm_peer_formats import (
    HM_PLAIN_CONTENT_TYPES,
    HmHeader,
    HmRefusal,
    PeerErrorReport,
    body_bytes,
    business_message,
    error_report,
    is_queue_name,
    read_error_report,
    read_header,
    sender_claimed,
)
from gateway.testing.hm_peer_replies import PeerDocument, PeerReplies, swapped_reply

__all__ = ["Answer", "HelsenorgePeer", "ReceivedMessage"]

log = get_logger(__name__)

#: what the peer keeps for a test to read back (messages), and remembers to find repeats (ids)
_KEPT = 10_000
_IDS_KEPT = 100_000

#: what a sync request is answered with: (request XML, who asked) -> reply XML
Answer = Callable[[bytes, str], Awaitable[bytes]]
#: HM's sync TTL (and CallTimeout)
SYNC_TTL_S = 15.0


class ReceivedMessage(NamedTuple):
    """A message the peer took: its AMQP message-id, sender, the decrypted XML and what it read of it."""

    message_id: str
    from_her: str
    xml: bytes
    subject: str
    queue: str  # "async" or "sync"
    msg_id: str | None  # the document's MsgId
    apprec_for: str | None  # an AppRec: the MsgId it answers
    apprec_status: str | None
    correlation_id: str | None


async def _default_answer(request: bytes, requester: str) -> bytes:
    return swapped_reply(request)


class HelsenorgePeer:
    def __init__(
        self,
        her_id: str,
        *,
        url: str,
        pki: Path,
        namespace: str = "",
        virtual_host: str | None = None,
        address_format: str = "v1",
        answer: Answer | None = None,
        never_settle: bool = False,
        late_s: float = 0.0,
        duplicate: bool = False,
        send_apprecs: bool = True,
    ) -> None:
        self.her_id = her_id
        self.addresses = Addresses(namespace, "v2" if address_format == "v2" else "v1")
        self.bus = Bus(url, virtual_host=virtual_host, name=f"hm-peer-{her_id}")
        self.crypto = PeerCrypto(pki, her_id)
        self.replies = PeerReplies()
        self.answer: Answer = answer or _default_answer
        self.never_settle = never_settle
        self.late_s = late_s
        self.duplicate = duplicate
        self.send_apprecs = send_apprecs
        # what a test reads back - the latest _KEPT of each, so a simulator that runs for days stays small
        #: business messages and AppRecs taken, in order
        self.received: deque[ReceivedMessage] = deque(maxlen=_KEPT)
        #: error reports read from our own error queue
        self.errors: deque[PeerErrorReport] = deque(maxlen=_KEPT)
        #: every message this peer put on the bus (each once, even when ``duplicate`` sent it twice)
        self.sent: deque[Message] = deque(maxlen=_KEPT)
        #: how often each AMQP message-id was delivered to us (on the async and sync queues)
        self.deliveries: Counter[str] = Counter()
        self._seen_ids: set[tuple[str, str]] = set()
        self._answered_msg_ids: set[tuple[str, str]] = set()

    # -- life -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.open()
        self.bus.consume(self.addresses.receiver(f"{self.her_id}_async"), self._on_async)
        self.bus.consume(self.addresses.receiver(f"{self.her_id}_sync"), self._on_sync)
        self.bus.consume(self.addresses.receiver(f"{self.her_id}_error"), self._on_error)
        if not await self.bus.wait_connected(60.0):
            raise RuntimeError("the HM peer could not connect to the broker")

    async def aclose(self) -> None:
        await self.bus.close()

    async def __aenter__(self) -> HelsenorgePeer:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- sending --------------------------------------------------------------------------------------

    async def send(self, xml: bytes, to_her: str, *, subject: str, message_id: str | None = None) -> Message:
        """Sign and encrypt ``xml`` for ``to_her`` and put it on ``<to>_async``, as HM's async sender does."""
        body = await asyncio.to_thread(self.crypto.protect, xml, to_her=to_her)
        queue = f"{to_her}_async"
        message = business_message(
            body,
            from_her=self.her_id,
            to_her=to_her,
            subject=subject,
            queue=queue,
            reply_to=f"{self.her_id}_async",
            message_id=message_id,
        )
        await self._put(queue, message)
        return message

    async def _put(self, queue: str, message: Message) -> None:
        self.sent.append(message)
        for _ in range(2 if self.duplicate else 1):
            await self.bus.send(self.addresses.sender(queue), message)

    async def _report(self, incoming: Incoming, refusal: HmRefusal) -> None:
        """The error-queue report to the sender, then the original accepted (no sender: dead-lettered)."""
        sender = sender_claimed(incoming.message)
        if sender is None:
            log.warning("hm_peer.unanswerable", code=refusal.condition, peer=self.her_id)
            incoming.reject()
            return
        report = error_report(
            incoming.message,
            reporter=self.her_id,
            sender=sender,
            condition=refusal.condition,
            description=refusal.description,
            data=refusal.data,
        )
        log.info("hm_peer.reported", code=refusal.condition, peer=self.her_id, receiver=sender)
        await self._put(f"{sender}_error", report)
        incoming.accept()

    # -- receiving ------------------------------------------------------------------------------------

    async def _open(self, incoming: Incoming, queue: str) -> tuple[HmHeader, bytes, PeerDocument] | None:
        """Header check, decryption, signature: the opened message, or None when it was answered or
        dropped (a repeated AMQP message-id)."""
        message = incoming.message
        try:
            header = read_header(message)
            if header.to_her != self.her_id:  # (a message for another party on our queue: nothing decrypts it)
                raise HmRefusal("transport:invalid-field-value", "Invalid ToHerId", ["ToHerId", header.to_her])
            if queue == "sync" and not is_queue_name(header.reply_to):
                raise HmRefusal("transport:invalid-field-value", "Invalid ReplyTo", ["ReplyTo"])
        except HmRefusal as refusal:
            await self._report(incoming, refusal)
            return None
        key = (header.from_her, header.message_id)
        if key in self._seen_ids:
            log.warning("hm_peer.duplicate_message_id", peer=self.her_id, sender=header.from_her)
            incoming.accept()
            return None
        try:
            body = body_bytes(message)
            if body is None:
                raise HmRefusal("transport:decryption-failed", "The body is not one Data section.")
            if header.content_type.lower() in HM_PLAIN_CONTENT_TYPES:
                xml = body
            else:
                xml = await asyncio.to_thread(self.crypto.unprotect, body, from_her=header.from_her)
            document = self.replies.read(xml)
            if document.envelope is None:  # PayloadDeserializationException
                raise HmRefusal("transport:not-well-formed-xml", "The payload is not a readable XML message.")
            if document.sender_her is not None and document.sender_her != header.from_her:
                raise HmRefusal("abuse:spoofing-attack", "The sender in the payload is not fromHerId.")
        except HmRefusal as refusal:
            await self._report(incoming, refusal)
            return None
        return header, xml, document

    def _record(self, header: HmHeader, xml: bytes, document: PeerDocument, queue: str) -> None:
        self.received.append(
            ReceivedMessage(
                header.message_id,
                header.from_her,
                xml,
                header.subject,
                queue,
                document.msg_id,
                document.apprec_for,
                document.apprec_status,
                header.correlation_id,
            )
        )

    def _delivered(self, incoming: Incoming) -> None:
        """Count a delivery; ids are forgotten all at once past _IDS_KEPT (a long simulator run)."""
        for seen in (self.deliveries, self._seen_ids, self._answered_msg_ids):
            if len(seen) > _IDS_KEPT:
                seen.clear()
        self.deliveries[str(incoming.message.id)] += 1

    async def _on_async(self, incoming: Incoming) -> None:
        self._delivered(incoming)
        if self.never_settle:
            incoming.release()
            return
        opened = await self._open(incoming, "async")
        if opened is None:
            return
        header, xml, document = opened
        self._record(header, xml, document, "async")
        log.info("hm_peer.received", peer=self.her_id, sender=header.from_her, subject=header.subject)
        envelope = document.envelope
        is_apprec = document.apprec_for is not None or header.subject == "APPREC"
        if envelope is not None and not is_apprec and self.send_apprecs and document.msg_id:
            answered = (header.from_her, document.msg_id)
            if answered in self._answered_msg_ids:  # a repeated MsgId: its AppRec went once
                log.warning("hm_peer.duplicate_msg_id", peer=self.her_id, sender=header.from_her)
            else:
                apprec = self.replies.ok_apprec(envelope, own_her=self.her_id)
                if apprec is not None:
                    await self._send_protected(apprec, header.from_her, subject="APPREC")
                    self._answered_msg_ids.add(answered)
        self._seen_ids.add((header.from_her, header.message_id))
        incoming.accept()

    async def _send_protected(self, xml: bytes, to_her: str, *, subject: str) -> None:
        await self.send(xml, to_her, subject=subject)

    async def _on_sync(self, incoming: Incoming) -> None:
        self._delivered(incoming)
        opened = await self._open(incoming, "sync")
        if opened is None:
            return
        header, xml, document = opened
        self._record(header, xml, document, "sync")
        assert header.reply_to is not None  # checked in _open
        reply_xml = await self.answer(xml, header.from_her)
        if self.late_s > 0:
            await asyncio.sleep(self.late_s)  # misbehaviour: later than the requester waits
        body = await asyncio.to_thread(self.crypto.protect, reply_xml, to_her=header.from_her)
        reply = business_message(
            body,
            from_her=self.her_id,
            to_her=header.from_her,
            subject=header.subject,
            queue=header.reply_to,
            reply_to=None,  # (a sync reply names no reply queue)
            correlation_id=header.correlation_id or header.message_id,
            ttl_s=SYNC_TTL_S,
        )
        try:
            await self._put(header.reply_to, reply)
        except Exception as exc:  # a reply queue that is not there: HM PR #42
            log.warning("hm_peer.reply_failed", peer=self.her_id, error=type(exc).__name__)
            await self._report(incoming, HmRefusal("transport:invalid-field-value", "Invalid ReplyTo", ["ReplyTo"]))
            return
        log.info("hm_peer.replied", peer=self.her_id, receiver=header.from_her, subject=header.subject)
        self._seen_ids.add((header.from_her, header.message_id))
        incoming.accept()

    async def _on_error(self, incoming: Incoming) -> None:
        report = read_error_report(incoming.message)
        self.errors.append(report)
        log.info("hm_peer.error_report", peer=self.her_id, code=report.condition, reporter=report.from_her)
        incoming.accept()

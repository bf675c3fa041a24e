"""The ``amqp`` transport: Helsenorge's Tjenestebuss (AMQP 1.0 on RabbitMQ), as a Helsenorge.Messaging
peer speaks it (HITS 1216).

Sending puts each packet on the receiver's async queue (``<her>_async``, or the queue its register entry
names) through the namespace's exchange; the broker's ``accepted`` is the transport acknowledgement - the
AppRec comes later, as an ordinary message. A receiver that cannot take a message reports it on our
``<her>_error`` queue: the report names our AMQP message-id, which this adapter remembers for each send
(sent.py, in its state for ``report_window_days``) to tell the gateway which delivery failed.

Receiving reads ``<her>_async`` and ``<her>_error`` for each local HER-id on the bus and settles a message
only after its outcome is stored:
- taken (or a known duplicate): accepted;
- refused: a report to the sender's ``_error`` queue, built from scratch to the HITS 1216 table, then the
  original is accepted; a message whose sender cannot be read is rejected (RabbitMQ dead-letters it to
  ``<her>_dl``, where an operator sees it);
- a temporary problem on our side, or an unexpected failure: held unsettled for ``release_after_s``, then
  given back (``released``), so the broker redelivers it and, after its delivery limit (10 on NHN's bus),
  dead-letters it to ``<her>_dl``.
A report about our own message that arrives twice, or a message whose AMQP message-id was already taken, is
logged and accepted without another answer (HITS 1216 §2.2.3); the same MsgId from the same sender gets
its AppRec once, as on every channel (the inbound pipeline's duplicate check).
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict

from adapters.amqp.bus import Incoming
from adapters.amqp.channels import Channels
from adapters.amqp.fields import (
    FieldProblem,
    canonical_id,
    error_message,
    outgoing,
    queue_name,
    read_error,
    read_packet,
    sender_of,
)
from adapters.amqp.sent import SentLedger
from adapters.amqp.settings import AmqpSettings
from adapters.amqp.sync import SyncRequests, SyncResponder
from adapters.amqp.workers import Workers
from gateway.config import redacted_url
from gateway.errors import PermanentDeliveryError, ProcessNotAgreed, SyncNotSupported, SyncTimeout
from gateway.log import get_logger
from gateway.transport import InboundHandler, Packet, SyncAnswerer, Transport, TransportContext

__all__ = ["AmqpTransport"]

log = get_logger(__name__)

#: AMQP message-ids of messages taken lately, to drop a repeated one (the inbound duplicate check by
#: sender and MsgId stays, durably, beneath this)
_SEEN_KEPT = 100_000
#: how long the start waits for the bus before it goes on (and keeps trying in the background): a send
#: waits for the connection itself, so a gateway without its broker need not be slow to start
_START_WAIT_S = 3.0
#: error reports a receiver may send as the first answer of a retryable kind: the delivery is tried again
_TEMPORARY = frozenset({"transport:internal-error", "transport:revoked-certificate-offline"})


class AmqpTransport(Transport):
    name = "amqp"
    carries = "cms"

    def __init__(self, context: TransportContext | None = None) -> None:
        super().__init__(context)
        self.settings = AmqpSettings.from_options(self.context.options)
        self.addresses = self.settings.addresses
        self.release_after_s = self.settings.release_after_s
        # the local HER-ids whose queues this gateway reads: every local party's unless the settings name them
        self.her_ids = self.settings.her_ids if self.settings.her_ids is not None else self.context.local_her_ids
        self.bus = self.settings.bus()
        self.sent = SentLedger(self.context.state, window_days=self.settings.report_window_days)
        self.channels = Channels(self.settings, self.context.certificates, data_dir=self.context.data_dir)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._held: set[asyncio.Task[None]] = set()
        self._receiving = Workers(self.settings.receive_concurrency)
        self.requests = SyncRequests(
            self.bus, self.addresses, self.settings.reply_queue, max_body=self.settings.max_body
        )
        answer = self.context.answer
        self.responder = (
            SyncResponder(
                self.bus,
                self.addresses,
                functools.partial(self._answer_agreed, answer=answer),
                self._report,
                ttl_s=self.settings.sync_timeout_s,
                concurrency=self.settings.sync_concurrency,
                max_body=self.settings.max_body,
            )
            if answer is not None
            else None
        )

    # -- life -----------------------------------------------------------------------------------------

    async def start(self, handler: InboundHandler) -> None:
        await self.bus.open()
        for her in self.her_ids:
            self.bus.consume(
                self.addresses.receiver(f"{her}_async"), functools.partial(self._take, her=her, handler=handler)
            )
            self.bus.consume(self.addresses.receiver(f"{her}_error"), self._reported_safely)
        self.requests.listen(self.her_ids)
        if self.responder is not None:
            self.responder.listen(self.her_ids)
        if not await self.bus.wait_connected(_START_WAIT_S):
            log.warning("amqp.not_connected", url=redacted_url(self.bus.url))

    async def aclose(self) -> None:
        for task in self._held:
            task.cancel()
        await self._receiving.aclose()
        if self.responder is not None:
            await self.responder.aclose()
        await self.bus.close()
        await self.channels.aclose()

    # -- sending --------------------------------------------------------------------------------------

    async def send(self, packet: Packet) -> None:
        channel = await self.channels.of(packet.from_her, packet.to_her)
        try:  # the region file's endpoint, where it names one, before the CPP/CPA's
            queue = queue_name(packet.destination) if packet.destination else channel.queues.asynchronous
        except ValueError as exc:
            raise PermanentDeliveryError(
                f"amqp: the register's endpoint for {packet.to_her} is not a queue: {exc}"
            ) from None
        assert queue is not None  # a channel's queues are filled in (Queues.or_defaults)
        # remembered first: a report may come back before the broker's acknowledgement does
        await self.sent.remember(packet.message_id, packet.reference, packet.to_her)
        message = outgoing(
            packet, queue=queue, reply_to=f"{packet.from_her}_async", ttl_s=self.settings.ttl_s, cpa_id=channel.cpa_id
        )
        await self.bus.open()  # a gateway opened it at start; a tool that only sends opens it here
        await self.bus.send(self.addresses.sender(queue), message)
        log.info("amqp.sent", message_id=packet.reference, receiver=packet.to_her, queue=queue)

    async def prepare(self, from_her: str, to_her: str) -> None:
        """The receiver's CPP/CPA certificates to the CMS before the packet is signed and encrypted."""
        await self.channels.of(from_her, to_her)

    async def request(self, packet: Packet, *, timeout_s: float) -> Packet:
        """A synchronous request to the receiver's ``_sync`` queue; its reply, within ``timeout_s``."""
        if packet.from_her not in self.her_ids:  # its replies would come to a queue this gateway does not read
            raise SyncNotSupported(
                f"This gateway does not read {self.settings.reply_queue(packet.from_her)} (amqp her_ids)."
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:  # one deadline for the lookup of the receiver's queue and the wait for the reply
            async with asyncio.timeout(timeout_s):
                await self.bus.open()
                channel = await self.channels.of(packet.from_her, packet.to_her)
        except TimeoutError:
            raise SyncTimeout(f"The request to {packet.to_her} could not be sent within {timeout_s:g} s.") from None
        queue = channel.queues.synchronous or f"{packet.to_her}_sync"
        remaining = deadline - loop.time()
        reply = await self.requests.request(packet, queue=queue, timeout_s=remaining, cpa_id=channel.cpa_id)
        log.info("amqp.sync_replied", receiver=packet.to_her)
        return reply

    # -- receiving ------------------------------------------------------------------------------------

    async def _take(self, incoming: Incoming, *, her: str, handler: InboundHandler) -> None:
        """Each received message on a task of its own, ``receive_concurrency`` at a time (workers.py)."""
        await self._receiving.start(incoming, functools.partial(self._received, incoming, her=her, handler=handler))

    async def _received(self, incoming: Incoming, *, her: str, handler: InboundHandler) -> None:
        message = incoming.message
        queue = f"{her}_async"
        try:
            packet = read_packet(message, queue=queue, owner=her, max_body=self.settings.max_body)
        except FieldProblem as problem:
            log.warning("amqp.bad_fields", code=problem.condition, queue=queue, fields=",".join(problem.names))
            await self._report(incoming, her, problem.condition, problem.description, data=";".join(problem.names))
            return
        key = f"{packet.from_her} {her} {canonical_id(packet.message_id)}"
        if key in self._seen:
            log.warning("amqp.duplicate_message_id", queue=queue, sender=packet.from_her)
            incoming.accept()
            return
        try:
            await self._agreed(packet)
            result = await handler(packet)
        except ProcessNotAgreed as exc:
            await self._report(incoming, her, exc.transport_condition or "", exc.public)
            return
        except Exception:  # a failure nobody foresaw: the message waits, and after the delivery limit goes to _dl
            log.exception("amqp.receive_failed", queue=queue, sender=packet.from_her)
            self._hold(incoming)
            return
        if result.accepted:
            self._remember(key)
            incoming.accept()
        elif result.retry_later:
            log.warning(
                "amqp.held", code=result.event, queue=queue, sender=packet.from_her, release_in_s=self.release_after_s
            )
            self._hold(incoming)
        else:
            await self._report(incoming, her, result.condition or "transport:internal-error", result.message)

    async def _agreed(self, packet: Packet) -> None:
        """The profile step of Helsenorge.Messaging's receive, before anything is decrypted: the sender's
        channel is looked up (its CPP/CPA certificates go to the CMS, to verify the signature with), and a CPA
        that does not let the sender send this kind of message refuses it (``transport:unsupported-message``)."""
        book = self.context.certificates
        if book is not None and not book.knows(packet.from_her):
            return  # no party of the region's: not looked up (a peer choosing HER-ids costs NHN nothing)
        channel = await self.channels.of(packet.to_her, packet.from_her)
        if not channel.agrees_to(packet.subject):
            log.warning(
                "amqp.process_not_agreed",
                code="transport:unsupported-message",
                sender=packet.from_her,
                receiver=packet.to_her,
                cpa_id=channel.cpa_id,
                subject=packet.subject,
            )
            raise ProcessNotAgreed(
                f"The CPA {channel.cpa_id} does not let {packet.from_her} send {packet.subject} to {packet.to_her}."
            )

    async def _answer_agreed(self, packet: Packet, *, answer: SyncAnswerer) -> bytes:
        """A synchronous request passes the same profile step as an asynchronous message."""
        await self._agreed(packet)
        return await answer(packet)

    async def _report(self, incoming: Incoming, her: str, condition: str, description: str, *, data: str = "") -> None:
        """Tell the sender on its error queue, then accept the original; with no sender to tell, reject it
        (dead-lettered to ``_dl``, where an operator sees it)."""
        sender = sender_of(incoming.message)
        if sender is None:
            log.error("amqp.unanswerable", code=condition, queue=incoming.address)
            incoming.reject()
            return
        report = error_message(incoming.message, condition, description, reporter=her, sender=sender, data=data)
        try:
            await self.bus.send(self.addresses.sender(f"{sender}_error"), report)
        except Exception as exc:  # the report could not go out: the original stays, and comes back
            log.warning("amqp.report_failed", code=condition, receiver=sender, error=str(exc))
            self._hold(incoming)
            return
        log.info("amqp.reported", code=condition, receiver=sender)
        incoming.accept()

    async def _reported_safely(self, incoming: Incoming) -> None:
        try:
            await self._reported(incoming)
        except Exception:  # the store away, say: the report waits and comes again, no hot loop
            log.exception("amqp.report_not_taken", queue=incoming.address)
            self._hold(incoming)

    async def _reported(self, incoming: Incoming) -> None:
        """A receiver's error report about a message we sent: the delivery fails, with its condition."""
        report = read_error(incoming.message)
        if report is None:
            log.warning("amqp.unreadable_report", queue=incoming.address)
            incoming.accept()
            return
        if self.requests.refused(report):  # about a synchronous request: its caller hears it at once
            log.info("amqp.sync_refused", code=report.condition, reporter=report.from_her)
            incoming.accept()
            return
        sent = await self.sent.find(report.original_message_id)
        if sent is None or self.context.reports is None:
            log.warning("amqp.report_unmatched", code=report.condition, reporter=report.from_her)
            incoming.accept()
            return
        reference, receiver = sent.reference, sent.receiver
        if receiver not in (report.from_her, report.to_her):  # (either way round: old libraries did not swap)
            log.warning("amqp.report_mismatch", code=report.condition, receiver=receiver, reporter=report.from_her)
            incoming.accept()
            return
        reason = f"{report.condition}: {report.description}".rstrip(": ")
        if report.data:
            reason += f" ({report.data})"
        if report.condition in _TEMPORARY:
            await self.context.reports.transport_abandoned(reference, receiver, reason)
        else:
            await self.context.reports.transport_refused(reference, receiver, reason)
        await self.sent.settle(sent)
        incoming.accept()

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        while len(self._seen) > _SEEN_KEPT:
            self._seen.popitem(last=False)

    def _hold(self, incoming: Incoming) -> None:
        """Keep the message unsettled for ``release_after_s``, then give it back."""

        async def release() -> None:
            try:
                await asyncio.sleep(self.release_after_s)
            finally:
                incoming.release()

        task = asyncio.create_task(release())
        self._held.add(task)
        task.add_done_callback(self._held.discard)

"""Synchronous request/reply on Helsenorge's bus (HITS 1216 §2.2.2; Helsenorge.Messaging's
``SynchronousSender`` and ``SynchronousMessageListener``).

Requesting: the request goes to the receiver's ``<her>_sync`` queue with ``reply-to`` = our party's
``<her>_syncreply``, ``correlation-id`` = its message-id and the call's time as its TTL (15 s: the broker
drops it unread after that). The caller waits for the reply with that correlation-id on the syncreply
queue, which this gateway reads for each local party; a reply nobody waits for any more (too late, or for
another process) is logged and dropped, as the library does. A receiver that reports the request on our
error queue ends the wait at once with its condition.

Answering: a request on a local party's ``<her>_sync`` queue is checked like any received message (header
fields, ``toHerId`` owning the queue, and a readable ``reply-to``), then handed to the gateway's answerer;
its reply goes to the request's ``reply-to`` with a new message-id, the request's subject and
correlation-id (its message-id when it had none), from/to swapped, and no AppRec. A request that cannot be
answered is reported on the requester's error queue; the request is settled either way (a synchronous
request is not worth redelivering: its caller has stopped waiting by then).
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from adapters.amqp.bus import Bus, Incoming
from adapters.amqp.fields import (
    CMS_CONTENT_TYPE,
    Addresses,
    ErrorReport,
    FieldProblem,
    canonical_id,
    correlation_of,
    outgoing,
    read_packet,
    reply_queue_of,
)
from adapters.amqp.workers import Workers
from gateway.errors import GatewayError, SyncRefused, SyncReplyInvalid, SyncTimeout
from gateway.log import get_logger
from gateway.transport import Packet, SyncAnswerer

__all__ = ["SyncRequests", "SyncResponder"]

log = get_logger(__name__)

#: how a responder tells a requester it cannot answer: (the request, the queue owner, condition, words, data)
Reporter = Callable[..., Awaitable[None]]


@dataclass
class _Waiting:
    reply: asyncio.Future[Packet]
    receiver: str  # whom we asked: the reply must be from that party
    requester: str  # our party: the reply must be for it


class SyncRequests:
    """The requester's side: sends requests and matches replies to the callers waiting for them."""

    def __init__(
        self, bus: Bus, addresses: Addresses, reply_queue: Callable[[str], str], *, max_body: int | None = None
    ) -> None:
        self.bus = bus
        self.addresses = addresses
        self.reply_queue = reply_queue  # a party's reply queue in this process (``sync_reply_queue``)
        self.max_body = max_body
        self._waiting: dict[str, _Waiting] = {}

    def listen(self, her_ids: tuple[str, ...]) -> None:
        for her in her_ids:
            queue = self.reply_queue(her)
            self.bus.consume(self.addresses.receiver(queue), functools.partial(self._replied, queue=queue))

    async def request(self, packet: Packet, *, queue: str, timeout_s: float, cpa_id: str | None = None) -> Packet:
        """Send ``packet`` to ``queue`` and wait up to ``timeout_s`` for its reply."""
        if timeout_s <= 0:
            raise SyncTimeout(f"No time was left to ask {packet.to_her}.")
        key = canonical_id(packet.message_id)
        waiting = _Waiting(asyncio.get_running_loop().create_future(), packet.to_her, packet.from_her)
        self._waiting[key] = waiting  # first: the reply may come before the broker's acknowledgement does
        message = outgoing(
            packet,
            queue=queue,
            reply_to=self.reply_queue(packet.from_her),
            ttl_s=timeout_s,
            correlation_id=packet.message_id,
            cpa_id=cpa_id,
        )
        try:
            async with asyncio.timeout(timeout_s):
                await self.bus.send(self.addresses.sender(queue), message)
                return await waiting.reply
        except TimeoutError:
            raise SyncTimeout(
                f"No reply from {packet.to_her} within {timeout_s:g} s (the request expires on the bus)."
            ) from None
        finally:
            self._waiting.pop(key, None)

    def refused(self, report: ErrorReport) -> bool:
        """An error report about a request someone waits for ends the wait; True when it was one."""
        waiting = self._waiting.get(canonical_id(report.original_message_id))
        # about our request, between the two parties of it (either way round: old libraries did not swap)
        if waiting is None or {report.from_her, report.to_her} != {waiting.receiver, waiting.requester}:
            return False
        if not waiting.reply.done():
            words = f"{report.condition}: {report.description}".rstrip(": ")
            waiting.reply.set_exception(
                SyncRefused(f"{waiting.receiver} refused the request: {words}", condition=report.condition)
            )
        return True

    async def _replied(self, incoming: Incoming, *, queue: str) -> None:
        correlation = correlation_of(incoming.message)
        waiting = self._waiting.get(canonical_id(correlation)) if correlation else None
        if waiting is None or waiting.reply.done():  # too late, or not ours: the library logs and drops it
            log.warning("amqp.sync_reply_unmatched", code="amqp.sync_reply_unmatched", queue=queue)
            incoming.accept()
            return
        try:
            packet = read_packet(incoming.message, queue=queue, max_body=self.max_body)
        except FieldProblem as problem:
            waiting.reply.set_exception(
                SyncReplyInvalid(f"The reply from {waiting.receiver} has bad fields: {', '.join(problem.names)}.")
            )
            incoming.accept()
            return
        if packet.to_her != waiting.requester or packet.from_her != waiting.receiver:  # not the one awaited
            log.warning(
                "amqp.sync_reply_mismatch", code="amqp.sync_reply_mismatch", queue=queue, sender=packet.from_her
            )
        else:
            waiting.reply.set_result(packet)
        incoming.accept()


class SyncResponder:
    """The responder's side: reads each local party's ``_sync`` queue and answers through the gateway,
    ``concurrency`` requests at a time across the parties (adapters/amqp/workers.py): a slow EHR must not
    hold up the requests behind it until they expire."""

    def __init__(
        self,
        bus: Bus,
        addresses: Addresses,
        answer: SyncAnswerer,
        report: Reporter,
        *,
        ttl_s: float,
        concurrency: int,
        max_body: int | None = None,
    ) -> None:
        self.bus = bus
        self.addresses = addresses
        self.answer = answer
        self.report = report
        self.ttl_s = ttl_s
        self.max_body = max_body
        self._workers = Workers(concurrency)

    def listen(self, her_ids: tuple[str, ...]) -> None:
        for her in her_ids:
            self.bus.consume(self.addresses.receiver(f"{her}_sync"), functools.partial(self._requested, her=her))

    async def aclose(self) -> None:
        await self._workers.aclose()

    async def _requested(self, incoming: Incoming, *, her: str) -> None:
        await self._workers.start(incoming, functools.partial(self._answered, incoming, her))

    async def _answered(self, incoming: Incoming, her: str) -> None:
        try:
            await self._answer(incoming, her)
        except asyncio.CancelledError:  # shutting down: the request goes back while it lives
            incoming.release()
            raise

    async def _answer(self, incoming: Incoming, her: str) -> None:
        message = incoming.message
        queue = f"{her}_sync"
        reply_queue = reply_queue_of(message)
        try:
            packet = read_packet(message, queue=queue, owner=her, max_body=self.max_body)
            # nowhere to answer (Helsenorge.Messaging PR #42), or a queue not the requester's own
            if reply_queue is None or not reply_queue.startswith(f"{packet.from_her}_"):
                raise FieldProblem(
                    "transport:invalid-field-value", "reply-to names no queue of the requester's.", ("ReplyTo",)
                )
        except FieldProblem as problem:
            log.warning("amqp.bad_fields", code=problem.condition, queue=queue, fields=",".join(problem.names))
            await self.report(incoming, her, problem.condition, problem.description, data=";".join(problem.names))
            return
        try:
            body = await self.answer(packet)
        except GatewayError as exc:
            condition = exc.transport_condition or "transport:internal-error"
            await self.report(incoming, her, condition, exc.public)
            return
        except Exception:  # a bug: the requester hears of it now rather than waiting out its time
            log.exception("amqp.sync_answer_failed", queue=queue, sender=packet.from_her)
            await self.report(incoming, her, "transport:internal-error", "The request could not be answered.")
            return
        reply = Packet(
            body=body,
            message_id=str(uuid.uuid4()),
            from_her=her,
            to_her=packet.from_her,
            content_type=CMS_CONTENT_TYPE,  # the answer is signed and encrypted, whatever the request said
            subject=packet.subject,
        )
        correlation = correlation_of(message) or packet.message_id
        try:
            await self.bus.send(
                self.addresses.sender(reply_queue),
                outgoing(reply, queue=reply_queue, reply_to=None, ttl_s=self.ttl_s, correlation_id=correlation),
            )
        except Exception as exc:  # the bus is away: the request comes back while it lives, and is answered then
            log.warning("amqp.sync_reply_failed", receiver=packet.from_her, error=str(exc))
            incoming.release()
            return
        log.info("amqp.sync_answered", receiver=packet.from_her, queue=reply_queue)
        incoming.accept()

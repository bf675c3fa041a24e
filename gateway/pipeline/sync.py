"""Synchronous request/reply (Helsenorge's ``_sync`` queues, HITS 1216 §2.2.2): an EHR asks and waits; a peer
asks and a local EHR answers. Nothing of it is queued or stored - a caller waits for a synchronous answer,
and one that comes after its time is of no use - and no AppRec is sent either way. Both directions are
judged as every message is (official schemas, the sender's signature first), and logged once per outcome
with ids and codes, never contents.

Requesting (:meth:`SyncPipeline.request`, ``POST /v1/sync``): the EHR's message is judged and its sender
checked as at submit, signed and encrypted for the receiver, and sent over the receiver's channel (only
channels with request/reply: ``amqp``); the reply must verify as signed by the party asked, be a valid KITH
message from it, and is handed back as XML.

Answering (:meth:`SyncPipeline.answer`, the transports' :data:`~gateway.transport.SyncAnswerer`): the request
must verify and be valid, from the party the transport names, to a local party whose EHR answers
synchronous requests (``sync_url``); the EHR's reply must be a valid KITH message from that party to the
requester, and goes back signed and encrypted. Whatever fails is raised with its transport condition for
the requester's error queue; a request that does not verify gets the one answer, no sooner than
``security.unverified_answer_s`` (docs/security.md).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.clock import Clock
from gateway.core import Core
from gateway.ehr import EhrSync
from gateway.errors import (
    GatewayError,
    MessageError,
    MetadataMismatch,
    SecurityError,
    SpoofingDetected,
    SyncNotOffered,
    SyncNotSupported,
    SyncReplyInvalid,
    SyncTimeout,
    SyncUnanswerable,
    UnknownReceiver,
)
from gateway.log import get_logger
from gateway.model.envelope import Envelope
from gateway.pipeline.inbound import answer_no_sooner
from gateway.pipeline.outbound import Client, OutboundPipeline
from gateway.security.protection import MessageProtection
from gateway.transport import Packet, Transport
from gateway.validation import rules

__all__ = ["SYNC_TIMEOUT_S", "SyncPipeline", "SyncReply", "header_safe"]

log = get_logger(__name__)

#: Helsenorge.Messaging's ``CallTimeout``: how long a requester waits, and a request lives on the bus
SYNC_TIMEOUT_S = 15.0
#: how long a local EHR has to answer (less than the requester waits, so the reply can still reach it)
EHR_ANSWER_S = 12.0


_HEADER_VALUE = re.compile(r"[\x21-\x7e]{1,128}")


def header_safe(headers: dict[str, str]) -> dict[str, str]:
    """The headers whose values may go on an HTTP message as they are (a MsgId is any xs:string: one with a
    line break or over 128 characters is left out rather than breaking the request or the response)."""
    return {name: value for name, value in headers.items() if _HEADER_VALUE.fullmatch(value)}


@dataclass(frozen=True)
class SyncReply:
    """A reply as the requesting EHR gets it: the XML, verified and judged, and what it is."""

    content: bytes
    kind: str
    msg_id: str
    from_her: str
    request_msg_id: str


class SyncPipeline:
    def __init__(
        self,
        core: Core,
        protection: MessageProtection,
        outbound: OutboundPipeline,
        transports: dict[str, Transport],
        clock: Clock,
    ) -> None:
        self.core = core
        self.protection = protection
        self.outbound = outbound
        self.transports = transports
        self.clock = clock
        self.ehr = EhrSync(max_bytes=core.settings.schemas.max_message_bytes)

    async def aclose(self) -> None:
        await self.ehr.aclose()

    # -- an EHR asks ------------------------------------------------------------------------------------

    async def request(self, data: bytes, client: Client, *, timeout_s: float = SYNC_TIMEOUT_S) -> SyncReply:
        """Send an EHR's request and wait for the reply; raise the error (KITH code, sync.* event) when it
        is refused here, is refused or not answered by the receiver, or the reply is not acceptable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s  # the caller's time covers judging and signing as well
        packet, transport = await self._prepared(data, client, deadline)
        fields = {"sender": packet.from_her, "receiver": packet.to_her, "kind": packet.kind, "client": client.name}
        log.info("sync.requested", **fields)
        try:
            reply = await transport.request(packet, timeout_s=deadline - loop.time())
            answer = await self._opened(reply, packet, via=transport.name)
        except GatewayError as exc:
            log.warning("sync.failed", code=exc.event, **fields)
            raise
        log.info("sync.replied", reply_kind=answer.kind, **fields)
        return answer

    async def _prepared(self, data: bytes, client: Client, deadline: float) -> tuple[Packet, Transport]:
        judgement = await asyncio.to_thread(self.core.validator.judge, data, check_receiver=False)
        try:
            envelope, sender, now = self.outbound.checked(judgement, client)
            route = self.core.router.route(envelope.receiver.her_ids if envelope.receiver else ())
            if route is None:
                raise UnknownReceiver(f"The {envelope.kind.title} names no receiver this gateway can reach.")
            transport = self.transports.get(route.channel)
            if transport is None:
                raise SyncNotSupported(
                    f"HER-id {route.receiver_her} is reached over {route.channel}, which is not running."
                )
        except GatewayError as exc:
            log.warning("sync.refused", code=exc.event, apprec_code=exc.apprec_code, client=client.name)
            raise
        cms = transport.carries == "cms"
        body = data
        if cms:
            try:  # the receiver's certificates, where the channel finds them (a CPP/CPA), within the deadline
                async with asyncio.timeout_at(deadline):
                    await transport.prepare(sender.her_id, route.receiver_her)
            except TimeoutError:
                log.warning("sync.failed", code=SyncTimeout.event, sender=sender.her_id, receiver=route.receiver_her)
                raise SyncTimeout(f"The request to {route.receiver_her} could not be prepared in time.") from None
            body = await asyncio.to_thread(
                self.protection.protect,
                data,
                sender_her=sender.her_id,
                receiver_her=route.receiver_her,
                at=datetime.fromtimestamp(now, UTC),
            )
        packet = Packet(
            body=body,
            message_id=str(uuid.uuid4()),
            from_her=sender.her_id,
            to_her=route.receiver_her,
            content_type=self.protection.content_type if cms else "application/xml",
            subject=envelope.msg_type or envelope.kind.name,
            destination=route.destination,
            msg_id=envelope.msg_id or "",
            kind=envelope.kind.name,
        )
        return packet, transport

    async def _opened(self, reply: Packet, request: Packet, *, via: str) -> SyncReply:
        """The reply verified as signed by the party asked, for the party that asked, and judged."""
        try:
            content = await self._verified(reply, receiver_her=request.from_her, sender_her=request.to_her)
            envelope = await self._judged(content, sender_her=request.to_her, via=via)
            if envelope.receiver_her != request.from_her:
                raise MetadataMismatch(
                    f"The reply is addressed to HER-id {envelope.receiver_her or '-'}, who did not ask."
                )
        except (SecurityError, MessageError) as exc:
            raise SyncReplyInvalid(f"The reply from {request.to_her} is not acceptable: {exc.message}") from exc
        return SyncReply(content, envelope.kind.name, envelope.msg_id or "", request.to_her, request.msg_id)

    # -- a peer asks, a local EHR answers ---------------------------------------------------------------

    async def answer(self, packet: Packet, *, via: str) -> bytes:
        """The reply to a peer's request that came over ``via``, protected for it; raises the error the
        requester is told."""
        started = asyncio.get_running_loop().time()
        fields = {"sender": packet.from_her, "receiver": packet.to_her}
        try:
            return await self._answer(packet, via)
        except GatewayError as exc:
            level = log.error if isinstance(exc, SpoofingDetected) else log.warning
            level(
                "sync.not_answered",
                code=exc.event,
                condition=exc.transport_condition,
                cause=getattr(exc, "cause", "") or None,  # what went wrong before the signature: ours only
                reason=None if isinstance(exc, MessageError) else exc.message,  # (a schema error may quote content)
                **fields,
            )
            await answer_no_sooner(exc.event, started, self.core.settings.security.unverified_answer_s)
            raise

    async def _answer(self, packet: Packet, via: str) -> bytes:
        content = await self._verified(packet, receiver_her=packet.to_her, sender_her=packet.from_her)
        request = await self._judged(content, sender_her=packet.from_her, via=via)
        rules.check_gen_date(request, now=self.clock.now())  # a request replayed long after: not answered again
        if request.receiver_her != packet.to_her:
            raise MetadataMismatch(
                f"The request is addressed to HER-id {request.receiver_her or '-'}; the transport says {packet.to_her}."
            )
        party = self.core.register.get(packet.to_her)
        if party is None or not party.local or not party.sync_url:
            raise SyncNotOffered(f"HER-id {packet.to_her} takes no synchronous requests.")
        headers = header_safe(
            {
                "X-Msg-Id": request.msg_id or "",
                "X-Kind": request.kind.name,
                "X-From-Her-Id": packet.from_her,
                "X-To-Her-Id": packet.to_her,
            }
        )
        answer = await self.ehr.ask(party.sync_url, content, headers, timeout_s=EHR_ANSWER_S)
        try:
            reply = await self._judged(answer, sender_her=party.her_id, via="")
        except (MessageError, SpoofingDetected) as exc:
            raise SyncUnanswerable(
                f"The EHR's answer is not acceptable ({exc.event}): {exc.message}",
                public="The receiver's system gave no valid answer.",
            ) from exc
        if reply.receiver_her != packet.from_her:
            raise SyncUnanswerable(
                f"The EHR's answer is addressed to {reply.receiver_her or '-'}, not to {packet.from_her}, who asked.",
                public="The receiver's system gave no valid answer.",
            )
        log.info("sync.answered", sender=packet.from_her, receiver=party.her_id, kind=reply.kind.name)
        return await asyncio.to_thread(
            self.protection.protect, answer, sender_her=party.her_id, receiver_her=packet.from_her
        )

    # -- shared -----------------------------------------------------------------------------------------

    async def _verified(self, packet: Packet, *, receiver_her: str, sender_her: str) -> bytes:
        verified = await asyncio.to_thread(
            self.protection.unprotect,
            packet.body,
            receiver_her=receiver_her,
            claimed_sender_her=sender_her,
            at=datetime.fromtimestamp(self.clock.now(), UTC),
        )
        if verified.untrusted is not None:
            raise verified.untrusted
        return verified.content

    async def _judged(self, content: bytes, *, sender_her: str, via: str) -> Envelope:
        """A valid KITH message that names ``sender_her`` as its sender (the transport's word and the
        signature's, checked before)."""
        judgement = await asyncio.to_thread(self.core.validator.judge, content, check_receiver=False)
        if judgement.error is not None:
            raise judgement.error
        envelope = judgement.envelope
        assert envelope is not None
        sender = self.core.router.sender(envelope.sender.her_ids if envelope.sender else (), sender_her, via)
        if sender is None or sender.her_id != sender_her:
            raise SpoofingDetected(
                f"The message does not name HER-id {sender_her}, whose signature it has, as its sender."
            )
        return envelope

"""Inbound: a packet arrives -> unprotect -> judge -> is it ours? duplicate? -> store (durable) -> EHR + AppRec.

Nothing is read before it is verified: a protected packet is decrypted and its signature verified with
the claimed sender's registered certificate first, and every failure up to that point gets the one answer
(:class:`~gateway.errors.UnverifiedPacket`), whatever went wrong (docs/security.md). The transport is
acknowledged only once the outcome is stored. Every outcome is kept for operators:

* valid and ours: ``received``, queued for the receiving party's EHR; an OK AppRec goes back at once when
  the gateway decides receipts for that party (``apprec = "gateway"``), else when the EHR says so;
* wrong but answerable (T01-T10, E10, E21, E36, and S02/S03 when the sender's own certificate fails trust):
  ``rejected``, with a negative AppRec queued in the same transaction;
* not ours, or the sender cannot be told (HITS 1168 §5.3): ``misaddressed``, no AppRec;
* the same (sender, MsgId) to the same receiver again: not stored again, not answered again - counted and
  traced on the first (HITS 1168 §5.4);
* an AppRec: matched to the delivery it answers (see receipts.py), never answered itself;
* not verifiable, not readable as a KITH message, or not from whom the transport says: refused at the
  transport with NHN's error condition and kept as a *refusal* (metadata and a digest, never the bytes,
  never as a message of the sender it claims); a temporary problem on our side (a CRL out of reach, a
  missing key) asks the peer to try again later.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime

from gateway.clock import Clock
from gateway.core import Core
from gateway.errors import (
    GatewayError,
    SecurityError,
    SpoofingDetected,
    UnverifiedPacket,
)
from gateway.log import get_logger
from gateway.model.envelope import Addressee, Envelope
from gateway.pipeline.receipts import Receipts
from gateway.registry import Party
from gateway.security.protection import MessageProtection
from gateway.store.base import (
    Direction,
    MessageState,
    NewMessage,
    Refusal,
    Store,
)
from gateway.transport import InboundResult, Packet
from gateway.validation.validator import Judgement

__all__ = ["InboundPipeline", "answer_no_sooner"]

log = get_logger(__name__)


async def answer_no_sooner(event: str | None, started: float, floor_s: float) -> None:
    """Hold the answer to a packet that did not verify (``event``: the refusal's) until ``floor_s`` after it
    arrived (``started``, loop time): the work done on it differs with how far it got, and the answer must
    not tell which by its timing (docs/security.md). Any other answer goes at once."""
    if event == UnverifiedPacket.event:
        await asyncio.sleep(max(0.0, started + floor_s - asyncio.get_running_loop().time()))


class InboundPipeline:
    def __init__(
        self, core: Core, store: Store, protection: MessageProtection, receipts: Receipts, clock: Clock
    ) -> None:
        self.core = core
        self.store = store
        self.protection = protection
        self.receipts = receipts
        self.clock = clock

    async def receive(self, packet: Packet, *, via: str, plain: bool = False) -> InboundResult:
        """Handle one packet from a transport (``plain``: the channel carries the XML itself - the hub's own
        hand-over, or NHN's Meldingstjener, which has verified it - so there is nothing to decrypt or verify).

        A packet that does not verify is answered no sooner than ``security.unverified_answer_s`` after it
        arrived: the work done on it differs with how far it got (a padding that fails at once, or a parse
        and a signature check), and the answer must not tell which by its timing."""
        started = asyncio.get_running_loop().time()
        result = await self._receive_or_refuse(packet, via=via, plain=plain)
        await answer_no_sooner(result.event, started, self.core.settings.security.unverified_answer_s)
        return result

    async def _receive_or_refuse(self, packet: Packet, *, via: str, plain: bool) -> InboundResult:
        try:
            return await self._receive(packet, via=via, plain=plain)
        except GatewayError as exc:  # a temporary problem on our side (CRL offline, store busy): peer keeps it
            log.warning(
                "inbound.retry_later" if exc.retryable else "transport.refused",
                code=exc.event,
                sender=packet.from_her,
                receiver=packet.to_her,
                via=via,
            )
            return InboundResult.refused(exc)

    async def _receive(self, packet: Packet, *, via: str, plain: bool) -> InboundResult:
        now = self.clock.now()
        content, untrusted = packet.body, None
        if not plain:
            try:
                verified = await asyncio.to_thread(
                    self.protection.unprotect,
                    packet.body,
                    receiver_her=packet.to_her,
                    claimed_sender_her=packet.from_her,
                    at=datetime.fromtimestamp(now, UTC),
                )
            except SecurityError as exc:
                if exc.retryable:
                    raise
                return await self._refuse(packet, via, exc, now)
            content, untrusted = verified.content, verified.untrusted
        judgement = await asyncio.to_thread(self.core.validator.judge, content, check_receiver=False)
        envelope = judgement.envelope
        if envelope is None:  # not readable as a KITH message at all: nobody to answer
            assert judgement.error is not None
            return await self._refuse(packet, via, judgement.error, now)
        if envelope.sender is None or not envelope.sender.her_ids:
            return await self._misaddressed(packet, via, envelope, content, now, "names no sender HER-id to answer")
        sender = self.core.router.sender(envelope.sender.her_ids, packet.from_her, via)
        if sender is None or (packet.from_her and sender.her_id != packet.from_her):
            who = f"party {sender.her_id}" if sender else "no one party of the register"
            spoof = SpoofingDetected(
                f"The transport says the packet is from HER-id {packet.from_her or '-'}; the message names "
                f"{', '.join(envelope.sender.her_ids)}, which is {who}."
            )
            return await self._refuse(packet, via, spoof, now)
        addressed = self.core.router.addressed(envelope, packet.to_her)
        if addressed is None:
            why = "is for a party this gateway does not serve"
            return await self._misaddressed(packet, via, envelope, content, now, why)
        party, answering, role = addressed.party, addressed.answering, addressed.role
        error: GatewayError | None = untrusted or judgement.error or addressed.error
        if envelope.kind.family == "apprec":
            return await self.receipts.take_apprec(
                envelope, judgement, content, via=via, now=now, error=error, sender=sender, receiver=party
            )
        on_packet = error is not None and error is not judgement.error
        return await self._store(
            packet, via, envelope, judgement, content, now, answering, role, sender, party, error, on_packet
        )

    async def _store(
        self,
        packet: Packet,
        via: str,
        envelope: Envelope,
        judgement: Judgement,
        content: bytes,
        now: float,
        answering: Addressee,
        role: str,
        sender: Party,
        party: Party,
        error: GatewayError | None,
        on_packet: bool,
    ) -> InboundResult:
        """Store a received message with its AppRec. A verdict on the packet rather than on the signed
        content (``on_packet``: the transport named another receiver, or the trust path of the signer came
        out wrong with the certificates this packet carried) must not take the duplicate key a correct copy
        of the same message needs: whoever re-sends a signed message under wrong metadata must not be able to
        keep the real one from the inbox. Such a record is a duplicate of an earlier good one, never the
        other way round."""
        sender_her, receiver_her = sender.her_id, party.her_id
        duplicate_of: tuple[str, ...]
        key = f"in|{sender_her}|{envelope.msg_id}|{receiver_her}" if envelope.msg_id else None
        dedupe_key, duplicate_of = key, ()
        if key is not None and error is not None and on_packet:
            dedupe_key, duplicate_of = f"{key}|{error.event}", (key,)
        message_id = uuid.uuid4().hex
        state = MessageState.REJECTED if error is not None else MessageState.RECEIVED
        deliveries = [] if error is not None else [self.core.router.ehr_delivery(party)]
        apprec = self.receipts.answer(
            envelope, message_id=message_id, answering=answering, role=role, party=party, error=error, now=now
        )
        message = NewMessage(
            id=message_id,
            direction=Direction.IN,
            kind=envelope.kind.name,
            msg_type=envelope.msg_type,
            msg_id=envelope.msg_id,
            sender_her=sender_her,
            receiver_her=receiver_her,
            state=state,
            payload=content,
            client=via,
            dedupe_key=dedupe_key,
            duplicate_of=duplicate_of,
            conversation_ref=envelope.conversation.ref_to_conversation if envelope.conversation else None,
            gen_date=envelope.gen_date,
            error_code=error.apprec_code if error else None,
            error_event=error.event if error else None,
            error_text=error.message if error else None,
            reason=(
                f"received via {via} for {receiver_her} ({role})"
                if error is None
                else f"rejected ({error.apprec_code}): {error.message}"
            ),
            detail={"transport_message_id": packet.message_id, "schema_checked": judgement.schema_checked},
        )
        record, created = await self.store.add_message(message, deliveries, now=now, follow_ups=apprec)
        fields = {
            "message_id": record.id,
            "direction": "in",
            "kind": record.kind,
            "sender": sender_her,
            "receiver": receiver_her,
            "via": via,
        }
        if not created:
            same = record.payload_sha256 == hashlib.sha256(content).hexdigest()
            log.info("message.duplicate", code="message.duplicate", same_content=same, **fields)
            return InboundResult(True, reference=record.id, message="duplicate: already received")
        if error is not None:
            log.warning("message.rejected", code=error.event, apprec_code=error.apprec_code, **fields)
        else:
            log.info("message.received", role=role, **fields)
        return InboundResult(True, reference=record.id, code=error.apprec_code if error else None)

    async def _misaddressed(
        self, packet: Packet, via: str, envelope: Envelope, content: bytes, now: float, why: str
    ) -> InboundResult:
        """Kept for operators, never answered (HITS 1168 §5.3)."""
        addressed = packet.to_her or envelope.receiver_her or "-"
        message = NewMessage(
            id=uuid.uuid4().hex,
            direction=Direction.IN,
            kind=envelope.kind.name,
            msg_type=envelope.msg_type,
            msg_id=envelope.msg_id,
            sender_her=envelope.sender_her,
            receiver_her=addressed,
            state=MessageState.MISADDRESSED,
            payload=content,
            client=via,
            dedupe_key=(
                f"in|{envelope.sender_her}|{envelope.msg_id}|{addressed}"
                if envelope.sender_her and envelope.msg_id
                else None
            ),
            error_event="message.misaddressed",
            reason=f"misaddressed: the message {why}; no AppRec (HITS 1168)",
        )
        record, _created = await self.store.add_message(message, [], now=now)
        log.warning(
            "message.misaddressed",
            code="message.misaddressed",
            message_id=record.id,
            direction="in",
            sender=envelope.sender_her,
            receiver=addressed,
            via=via,
        )
        return InboundResult(True, reference=record.id, event="message.misaddressed")

    async def _refuse(self, packet: Packet, via: str, error: GatewayError, now: float) -> InboundResult:
        """Refused at the transport: the peer is told the NHN condition, operators get a refusal record
        (metadata and a digest; the bytes are not kept, and the sender it names is only a claim)."""
        cause = getattr(error, "cause", "") or None
        refusal = Refusal(
            at=now,
            via=via,
            event=error.event,
            cause=cause,
            condition=error.transport_condition,
            code=error.apprec_code,
            claimed_sender=packet.from_her or None,
            claimed_receiver=packet.to_her or None,
            transport_message_id=packet.message_id or None,
            size=len(packet.body),
            sha256=hashlib.sha256(packet.body).hexdigest(),
            reason=error.message,
        )
        refusal_id = await self.store.add_refusal(refusal, keep=self.core.settings.housekeeping.refusals_kept)
        level = log.error if isinstance(error, SpoofingDetected) else log.warning
        level(
            "transport.refused",
            code=error.event,
            cause=cause,
            reason=getattr(error, "reason", "") or None,
            condition=error.transport_condition,
            refusal=refusal_id,
            direction="in",
            claimed_sender=packet.from_her,
            receiver=packet.to_her,
            via=via,
        )
        return InboundResult.refused(error)

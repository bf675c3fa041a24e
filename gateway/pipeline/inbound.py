"""Inbound: a packet arrives -> unprotect -> judge -> is it ours? duplicate? -> store (durable) -> EHR + AppRec.

The transport is acknowledged only once the outcome is stored. Every outcome is kept for operators:

* valid and ours: ``received``, queued for the receiving party's EHR; an OK AppRec goes back at once when
  the gateway decides receipts for that party (``apprec = "gateway"``), else when the EHR says so;
* wrong but answerable (T01-T10, E10, E21, E36, S01-S03 with the sender known): ``rejected``, with a
  negative AppRec queued in the same transaction;
* not ours, or the sender cannot be told (HITS 1168 §5.3): ``misaddressed``, no AppRec;
* the same (sender, MsgId) to the same receiver again: not stored again, not answered again - counted and
  traced on the first (HITS 1168 §5.4);
* an AppRec: matched to the delivery it answers (see receipts.py), never answered itself;
* unreadable or not from whom it claims (decryption, spoofing): refused at the transport with NHN's
  error condition; a temporary problem (a CRL out of reach) asks the peer to try again later.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime

from adapters.base import InboundResult, Packet
from gateway.clock import Clock
from gateway.core import Core
from gateway.errors import GatewayError, MetadataMismatch, SecurityError, SpoofingDetected, UnknownReceiver
from gateway.log import get_logger
from gateway.model.envelope import Addressee, Envelope
from gateway.pipeline.receipts import Receipts, addressee_of
from gateway.registry import Party
from gateway.security.protection import MessageProtection
from gateway.store.base import DeliveryState, Direction, MessageState, NewDelivery, NewMessage, Store
from gateway.validation.validator import Judgement

__all__ = ["InboundPipeline"]

log = get_logger(__name__)


class InboundPipeline:
    def __init__(
        self, core: Core, store: Store, protection: MessageProtection, receipts: Receipts, clock: Clock
    ) -> None:
        self.core = core
        self.store = store
        self.protection = protection
        self.receipts = receipts
        self.clock = clock

    async def receive(self, packet: Packet, *, via: str, local: bool = False) -> InboundResult:
        """Handle one packet from a transport (``local``: handed over inside the hub, not protected)."""
        try:
            return await self._receive(packet, via=via, local=local)
        except GatewayError as exc:  # a temporary problem on our side (CRL offline, store busy): peer keeps it
            log.warning(
                "inbound.retry_later" if exc.retryable else "transport.refused",
                code=exc.event,
                sender=packet.from_her,
                receiver=packet.to_her,
                via=via,
            )
            return InboundResult.refused(exc)

    async def _receive(self, packet: Packet, *, via: str, local: bool) -> InboundResult:
        now = self.clock.now()
        content = packet.body
        security_error: SecurityError | None = None
        if not local:
            try:
                verified = await asyncio.to_thread(
                    self.protection.unprotect,
                    packet.body,
                    receiver_her=packet.to_her,
                    claimed_sender_her=packet.from_her,
                    at=datetime.fromtimestamp(now, UTC),
                )
                content = verified.content
            except SecurityError as exc:
                if exc.retryable:
                    raise
                if isinstance(exc, SpoofingDetected) or exc.content is None:
                    return await self._refuse(packet, via, exc, now)
                content, security_error = exc.content, exc  # decrypted, but the signer is not to be trusted
        judgement = await asyncio.to_thread(self.core.validator.judge, content, check_receiver=False)
        envelope = judgement.envelope
        if envelope is None:  # not readable as a KITH message at all: nobody to answer
            assert judgement.error is not None
            return await self._refuse(packet, via, judgement.error, now, content)
        if envelope.sender is None or not envelope.sender.her_ids:
            return await self._misaddressed(packet, via, envelope, content, now, "names no sender HER-id to answer")
        sender = self.core.register.attribute(envelope.sender.her_ids)
        if sender is None or (packet.from_her and sender.her_id != packet.from_her):
            who = f"party {sender.her_id}" if sender else "no one party of the register"
            spoof = SpoofingDetected(
                f"The transport says the packet is from HER-id {packet.from_her or '-'}; the message names "
                f"{', '.join(envelope.sender.her_ids)}, which is {who}."
            )
            return await self._refuse(packet, via, spoof, now, content)
        error: GatewayError | None = security_error or judgement.error
        me, role = self._addressee(envelope, packet.to_her)
        party = self.core.register.attribute(me.her_ids) if me is not None else None
        if me is not None and party is not None and party.local and party.her_id == (packet.to_her or party.her_id):
            answering = me  # the AppRec mirrors the receiver as the message names it
        else:
            # not plainly ours: answer E10 (transport and message disagree) or E21 (a service of one of our
            # organisations we do not know) as the local party that took the packet - or keep it unanswered
            taker = self.core.register.get(packet.to_her)
            named = me or envelope.receiver
            if taker is None or not taker.local:
                org = named.organisation_her_id if named else None
                if not self.core.register.is_local_organisation(org):
                    return await self._misaddressed(
                        packet, via, envelope, content, now, "is for a party this gateway does not serve"
                    )
                taker = next(p for p in self.core.register.local_parties if p.organisation.her_id == org)
                error = error or UnknownReceiver(
                    f"The receiving service (HER-id {', '.join(named.her_ids) if named else packet.to_her}) is "
                    f"not registered at {taker.organisation.name}."
                )
            else:
                error = error or MetadataMismatch(
                    f"The transport addresses HER-id {packet.to_her}, but the message names no such receiver."
                )
            party, answering, role = taker, addressee_of(taker), role if me is not None else "PRIM"
        if envelope.kind.family == "apprec":
            return await self.receipts.take_apprec(
                envelope, judgement, content, via=via, now=now, error=error, sender=sender, receiver=party
            )
        return await self._store(packet, via, envelope, judgement, content, now, answering, role, sender, party, error)

    def _addressee(self, envelope: Envelope, to_her: str) -> tuple[Addressee | None, str]:
        """Which of the message's receivers the packet is for: the primary or a copy receiver."""
        if envelope.receiver is not None and (not to_her or to_her in envelope.receiver.her_ids):
            return envelope.receiver, "PRIM"
        for copy in envelope.copies:
            if to_her in copy.her_ids:
                return copy, "COP"
        return None, "PRIM"

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
    ) -> InboundResult:
        sender_her, receiver_her = sender.her_id, party.her_id
        message_id = uuid.uuid4().hex
        state = MessageState.REJECTED if error is not None else MessageState.RECEIVED
        deliveries = [] if error is not None else [self._ehr_delivery(party)]
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
            dedupe_key=f"in|{sender_her}|{envelope.msg_id}|{receiver_her}" if envelope.msg_id else None,
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

    @staticmethod
    def _ehr_delivery(party: Party) -> NewDelivery:
        if party.delivery == "inbox":
            return NewDelivery(party.her_id, "EHR", "ehr:inbox", state=DeliveryState.INBOX, ordered=False)
        return NewDelivery(party.her_id, "EHR", f"ehr:{party.delivery}", ordered=True)

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

    async def _refuse(
        self, packet: Packet, via: str, error: GatewayError, now: float, content: bytes | None = None
    ) -> InboundResult:
        """Refused at the transport: kept (the raw packet) for operators, the peer told the NHN condition."""
        message = NewMessage(
            id=uuid.uuid4().hex,
            direction=Direction.IN,
            kind=None,
            msg_type=packet.subject or None,
            msg_id=None,
            sender_her=packet.from_her or None,
            receiver_her=packet.to_her or None,
            state=MessageState.REJECTED,
            payload=content if content is not None else packet.body,
            client=via,
            dedupe_key=None,
            error_code=error.apprec_code,
            error_event=error.event,
            error_text=error.message,
            reason=f"refused at the transport ({error.transport_condition}): {error.message}",
            detail={"transport_message_id": packet.message_id},
        )
        record, _created = await self.store.add_message(message, [], now=now)
        level = log.error if isinstance(error, SpoofingDetected) else log.warning
        level(
            "transport.refused",
            code=error.event,
            condition=error.transport_condition,
            message_id=record.id,
            direction="in",
            sender=packet.from_her,
            receiver=packet.to_her,
            via=via,
        )
        return InboundResult.refused(error, reference=record.id)

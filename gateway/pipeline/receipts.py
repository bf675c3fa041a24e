"""The receipt loop: the AppRecs this gateway sends, and the ones it receives and matches.

Out: exactly one AppRec per received message and receiver (a copy receiver answers for itself, role COP),
never one for a duplicate, a misaddressed message or an AppRec. Failures the gateway finds itself are
answered at once (status 2 with the KITH codes); otherwise the gateway answers OK once the message is
stored for the EHR (``apprec = "gateway"``), or the EHR decides (``apprec = "ehr"``). The AppRec is
queued in the same transaction that stores the message, and travels the ordinary outbound path.

In: an AppRec is matched to the delivery it answers by OriginalMsgId, the original sender (its Receiver)
and the answering party (its Sender). The delivery becomes acknowledged (1), rejected (2) or
acknowledged-with-errors (3); an AppRec that answers nothing we sent is kept and flagged ``unmatched``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from gateway.clock import Clock
from gateway.core import Core
from gateway.errors import Conflict, GatewayError, NotFound, PatientNotIdentified
from gateway.log import get_logger
from gateway.model.apprec import AppRecError, build_apprec, read_apprec
from gateway.model.envelope import Addressee, Envelope
from gateway.registry import Party
from gateway.retry import policy_for
from gateway.store.base import (
    AppRecOutcome,
    Direction,
    MessageState,
    NewDelivery,
    NewMessage,
    Store,
)
from gateway.store.rules import APPREC_STATUSES
from gateway.transport import InboundResult
from gateway.validation.validator import Judgement
from gateway.xml import parse

__all__ = ["FollowUp", "Receipts"]

log = get_logger(__name__)

FollowUp = tuple[NewMessage, list[NewDelivery]]

class Receipts:
    def __init__(self, core: Core, store: Store, clock: Clock) -> None:
        self.core = core
        self.store = store
        self.clock = clock

    # -- out ----------------------------------------------------------------------------------------

    def answer(
        self,
        original: Envelope,
        *,
        message_id: str,
        answering: Addressee,
        role: str,
        party: Party,
        error: GatewayError | None,
        now: float,
    ) -> list[FollowUp]:
        """The AppRec to queue with a received message now: negative for the gateway's own findings,
        OK when the gateway decides for ``party``; none when its EHR will decide."""
        if error is None and party.apprec == "ehr":
            return []
        errors: list[AppRecError] = []
        if error is not None:
            errors.append(AppRecError(error.apprec_code or "X99", error.public))
            if isinstance(error, PatientNotIdentified):
                errors += [AppRecError(code, text) for code, text in error.details]
        status = "2" if errors else "1"
        follow_up = self.build(
            original,
            message_id=message_id,
            answering=answering,
            role=role,
            party=party,
            status=status,
            errors=tuple(errors),
            now=now,
        )
        return [follow_up]

    def build(
        self,
        original: Envelope,
        *,
        message_id: str,
        answering: Addressee,
        role: str,
        party: Party,
        status: str,
        errors: tuple[AppRecError, ...] = (),
        now: float,
        actor: str = "gateway",
    ) -> FollowUp:
        """An AppRec from ``party`` (as ``answering``) to the original's sender, ready to be stored."""
        version = original.kind.apprec or "1.0"
        apprec_id = str(uuid.uuid4())
        xml = build_apprec(
            original,
            version=version,
            answering=answering,
            role=role,
            status=status,
            errors=errors,
            msg_id=apprec_id,
            now=datetime.fromtimestamp(now, UTC),
        )
        route = self.core.router.reply(original)
        receiver_her = route.receiver_her if route else (original.sender_her or "-")
        delivery = NewDelivery(
            receiver_her=receiver_her,
            role="PRIM",
            channel=route.channel if route else "unroutable",
            ordered=False,  # AppRecs carry no order and must not wait behind business messages in a lane
            expires_at=now + policy_for(self.core.settings.retry, receiver_her).ttl_s,
        )
        codes = ",".join(e.code for e in errors)
        message = NewMessage(
            id=uuid.uuid4().hex,
            direction=Direction.OUT,
            kind=f"apprec-{version}",
            msg_type="APPREC",
            msg_id=apprec_id,
            sender_her=party.her_id,
            receiver_her=receiver_her,
            state=MessageState.ACCEPTED,
            payload=xml,
            client=actor,
            dedupe_key=f"out|{party.her_id}|{apprec_id}",
            apprec_of=message_id,
            gen_date=datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            reason=f"AppRec {version} status {status}{f' ({codes})' if codes else ''} for {original.msg_id}, "
            f"decided by {actor}",
            detail={"status": status, "errors": [e.code for e in errors]},
        )
        return message, [delivery]

    # -- in -----------------------------------------------------------------------------------------

    async def take_apprec(
        self,
        envelope: Envelope,
        judgement: Judgement,
        content: bytes,
        *,
        via: str,
        now: float,
        error: GatewayError | None,
        sender: Party,
        receiver: Party,
    ) -> InboundResult:
        """Store an arriving AppRec and apply it to the delivery it answers. Never answered itself.

        It is matched only on the verified sender (the party the transport and the signature vouch for)
        and the local party it came to - never on other HER-ids the AppRec names - so a peer can settle
        only its own deliveries."""
        root = judgement.document.root if judgement.document else parse(content).root
        received = read_apprec(envelope, root)
        outcome = None
        if error is None and received.status in APPREC_STATUSES and received.original_msg_id:
            outcome = AppRecOutcome(
                received.status, tuple((e.code, e.text) for e in received.errors), envelope.msg_id or "", now
            )
        record, matched, created = await self.store.apply_apprec(
            NewMessage(
                id=uuid.uuid4().hex,
                direction=Direction.IN,
                kind=envelope.kind.name,
                msg_type="APPREC",
                msg_id=envelope.msg_id,
                sender_her=sender.her_id,
                receiver_her=receiver.her_id,
                state=MessageState.RECEIVED if error is None else MessageState.REJECTED,
                payload=content,
                client=via,
                dedupe_key=f"in|{sender.her_id}|{envelope.msg_id}|{receiver.her_id}" if envelope.msg_id else None,
                error_code=error.apprec_code if error else None,
                error_event=error.event if error else None,
                error_text=error.message if error else None,
                reason=f"AppRec status {received.status} for {received.original_msg_id} received via {via}",
            ),
            original_msg_id=received.original_msg_id,
            original_sender_her_ids=(receiver.her_id,),
            answering_her_ids=(sender.her_id,),
            outcome=outcome,
            now=now,
        )
        fields = {
            "message_id": record.id,
            "direction": "in",
            "kind": record.kind,
            "sender": sender.her_id,
            "receiver": receiver.her_id,
            "via": via,
        }
        if not created:
            log.info("apprec.duplicate", code="message.duplicate", **fields)
        elif matched is None:
            log.warning("apprec.unmatched", code="apprec.unmatched", status=received.status, **fields)
        else:
            log.info(
                "apprec.received",
                status=received.status,
                original=matched,
                errors=[e.code for e in received.errors],
                **fields,
            )
        return InboundResult(True, reference=record.id)

    # -- in, as a transport reports it (NHN's Meldingstjener: DeliveryReports) ------------------------------

    async def receipt(self, reference: str, receiver_her: str, status: str, errors: Sequence[tuple[str, str]]) -> None:
        """The receiver's AppRec as its transport reports it: settles the delivery as an AppRec would."""
        now = self.clock.now()
        if status not in APPREC_STATUSES:
            log.warning("apprec.unreadable_status", code="apprec.unreadable_status", message_id=reference)
            return
        outcome = AppRecOutcome(status, tuple(errors), "", now)
        if await self.store.settle_delivery(reference, receiver_her, outcome, now=now):
            log.info("apprec.received", message_id=reference, receiver=receiver_her, status=status, via="transport")
        else:
            log.warning("apprec.unmatched", code="apprec.unmatched", message_id=reference, receiver=receiver_her)

    async def transport_refused(self, reference: str, receiver_her: str, reason: str) -> None:
        """The receiver's system refused what its transport had taken: the delivery is dead, with ``reason``."""
        if await self.store.transport_failed(
            reference, receiver_her, now=self.clock.now(), code="delivery.refused", error=reason, next_attempt_at=None
        ):
            log.error("delivery.dead", code="delivery.refused", message_id=reference, receiver=receiver_her)

    async def transport_abandoned(self, reference: str, receiver_her: str, reason: str) -> None:
        """The transport gave up on the receiver after taking the delivery: dead, or sent again with the
        backoff when the route's policy says ``abandoned = "retry"`` (attempts and time to live permitting)."""
        now = self.clock.now()
        policy = policy_for(self.core.settings.retry, receiver_her)
        when: float | None = None
        if policy.abandoned == "retry":
            view = await self.store.get(reference)
            delivery = next((d for d in view.deliveries if d.receiver_her == receiver_her), None) if view else None
            if delivery is not None:
                when = policy.next_attempt_at(attempt=delivery.attempts, now=now, expires_at=delivery.expires_at)
        if not await self.store.transport_failed(
            reference, receiver_her, now=now, code="delivery.abandoned", error=reason, next_attempt_at=when
        ):
            return
        if when is None:
            log.error("delivery.dead", code="delivery.abandoned", message_id=reference, receiver=receiver_her)
        else:
            log.warning("delivery.retrying", code="delivery.abandoned", message_id=reference, receiver=receiver_her)

    async def ehr_decides(self, message_id: str, *, status: str, errors: tuple[AppRecError, ...], actor: str) -> str:
        """The EHR's verdict on a received message (``apprec = "ehr"``): build, queue and return its AppRec id."""
        view = await self.store.get(message_id)
        if view is None or view.message.direction is not Direction.IN:
            raise NotFound(f"No received message {message_id}.")
        if view.message.msg_type == "APPREC" or (view.message.kind or "").startswith("apprec-"):
            raise Conflict(f"Message {message_id} is an AppRec; an AppRec is never answered.")
        party = self.core.register.get(view.message.receiver_her)
        if party is None or not party.local:
            raise Conflict(f"{view.message.receiver_her} is no longer a local party; nobody can answer for it.")
        if party.apprec != "ehr":
            raise Conflict(f'{party.display} has its AppRecs decided by the gateway (apprec = "gateway").')
        payload = await self.store.payload(message_id)
        if payload is None:
            raise Conflict(f"The document of message {message_id} has been pruned; it can no longer be answered.")
        judgement = await asyncio.to_thread(self.core.validator.judge, payload, check_receiver=False)
        envelope = judgement.envelope
        if envelope is None:
            raise Conflict(f"Message {message_id} cannot be read as a KITH message any more.")
        me, role = self.core.router.answering(envelope, party)
        now = self.clock.now()
        follow_up = self.build(
            envelope,
            message_id=message_id,
            answering=me,
            role=role,
            party=party,
            status=status,
            errors=errors,
            now=now,
            actor=actor,
        )
        await self.store.add_apprec_for(message_id, follow_up, actor=actor, now=now)
        return follow_up[0].id

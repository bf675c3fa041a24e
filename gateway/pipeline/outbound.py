"""Outbound: an EHR hands in a message -> judge -> sender allowed? -> route every receiver -> store (durable).

Accepting is durable before the caller hears back: the message and one delivery per receiver (primary and
each copy receiver) are stored in one transaction. Resubmitting the same (sender, MsgId) returns the first
record; the same MsgId with different content is refused, since every message needs its own MsgId.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.config import Settings
from gateway.core import Core
from gateway.errors import Conflict, Forbidden, MessageError, UnknownReceiver
from gateway.log import get_logger
from gateway.model.envelope import Addressee, Envelope
from gateway.registry import Party
from gateway.retry import policy_for
from gateway.store.base import Direction, MessageRecord, MessageState, NewDelivery, NewMessage, Store
from gateway.validation import rules

__all__ = ["Client", "OutboundPipeline", "channel_for", "plan_deliveries"]

log = get_logger(__name__)


@dataclass(frozen=True)
class Client:
    """Who hands messages in: an API token's client, a drop folder, or the gateway itself."""

    name: str
    senders: frozenset[str] | None = None  # local HER-ids it may send for; None: every local party
    admin: bool = False

    def may_send_for(self, her_id: str) -> bool:
        return self.senders is None or her_id in self.senders


def channel_for(party: Party) -> str:
    """How a delivery to ``party`` travels: within the hub, or through its transport adapter."""
    return "local" if party.local else (party.adapter or "http")


def plan_deliveries(
    envelope: Envelope, core: Core, settings: Settings, *, now: float, receipts: bool = True
) -> list[NewDelivery]:
    """One delivery per receiver: the primary, then each copy receiver named by a HER-id (E21 if unknown)."""
    receivers: list[tuple[Addressee, str]] = []
    if envelope.receiver is not None:
        receivers.append((envelope.receiver, "PRIM"))
    receivers += [(copy, "COP") for copy in envelope.copies]
    kind = envelope.kind.name
    deadline_h = settings.receipts.deadline_by_kind.get(kind, settings.receipts.deadline_h)
    warning_h = min(settings.receipts.warning_h, deadline_h)
    start = max(rules.gen_timestamp(envelope.gen_date) or now, now)
    planned: list[NewDelivery] = []
    seen: set[str] = set()
    for addressee, role in receivers:
        if not addressee.her_ids:
            if role == "PRIM":
                raise UnknownReceiver(f"The {envelope.kind.title} does not name its receiver by a HER-id.")
            continue  # a copy for paper or another channel: not ours to deliver
        party = core.register.find(addressee.her_ids)
        if party is None:
            who = "copy receiver" if role == "COP" else "receiver"
            raise UnknownReceiver(
                f"The {who} with HER-id {', '.join(addressee.her_ids)} is not in the address register "
                f"({core.register.name or 'this gateway'})."
            )
        if party.her_id in seen:
            continue
        seen.add(party.her_id)
        policy = policy_for(settings.retry, party.her_id)
        planned.append(
            NewDelivery(
                receiver_her=party.her_id,
                role=role,
                channel=channel_for(party),
                ordered=policy.ordered,
                deadline_at=start + deadline_h * 3600 if receipts else None,
                warn_at=start + warning_h * 3600 if receipts else None,
                expires_at=now + policy.ttl_s,
            )
        )
    return planned


class OutboundPipeline:
    def __init__(self, core: Core, store: Store, clock: Clock) -> None:
        self.core = core
        self.store = store
        self.clock = clock
        self.settings = core.settings

    async def submit(self, data: bytes, client: Client) -> tuple[MessageRecord, bool]:
        """Take a message from a local EHR; raise the error (with its KITH code) when it is refused."""
        judgement = await asyncio.to_thread(self.core.validator.judge, data, check_receiver=False)
        envelope = judgement.envelope
        try:
            if judgement.error is not None:
                raise judgement.error
            assert envelope is not None
            sender = self.core.register.attribute(envelope.sender.her_ids if envelope.sender else ())
            if sender is None or not sender.local:
                raise Forbidden(
                    f"The sender (HER-id {', '.join(envelope.sender.her_ids) if envelope.sender else '-'}) is not "
                    "one local party of this gateway; it can only send for the parties it serves."
                )
            if not client.may_send_for(sender.her_id):
                raise Forbidden(f"Client {client.name} may not send for {sender.display} (HER-id {sender.her_id}).")
            now = self.clock.now()
            rules.check_gen_date(envelope, now=now)
            deliveries = plan_deliveries(
                envelope, self.core, self.settings, now=now, receipts=envelope.kind.family != "apprec"
            )
        except (MessageError, Forbidden) as exc:
            log.warning(
                "message.refused",
                code=exc.event,
                apprec_code=exc.apprec_code,
                client=client.name,
                kind=judgement.kind.name if judgement.kind else None,
                sender=envelope.sender_her if envelope else None,
            )
            raise
        if not envelope.kind.type_matches(envelope.msg_type):
            log.warning(
                "message.type_mismatch",
                code="message.type_mismatch",
                kind=envelope.kind.name,
                msg_type=envelope.msg_type,
                client=client.name,
            )
        message = NewMessage(
            id=uuid.uuid4().hex,
            direction=Direction.OUT,
            kind=envelope.kind.name,
            msg_type=envelope.msg_type,
            msg_id=envelope.msg_id,
            sender_her=sender.her_id,
            receiver_her=deliveries[0].receiver_her if deliveries else envelope.receiver_her,
            state=MessageState.ACCEPTED,
            payload=data,
            client=client.name,
            dedupe_key=f"out|{sender.her_id}|{envelope.msg_id}",  # check_ids has made sure there is a MsgId
            conversation_ref=envelope.conversation.ref_to_conversation if envelope.conversation else None,
            gen_date=envelope.gen_date,
            reason=f"accepted from {client.name}"
            + ("" if judgement.schema_checked else " (content not schema-checked)"),
        )
        record, created = await self.store.add_message(message, deliveries, now=now)
        if not created and record.payload_sha256 != hashlib.sha256(data).hexdigest():
            raise Conflict(
                f"MsgId {envelope.msg_id} was already used by {sender.her_id} for a different message "
                f"(gateway id {record.id}); every message needs its own MsgId."
            )
        log.info(
            "message.accepted" if created else "message.resubmitted",
            message_id=record.id,
            direction="out",
            kind=record.kind,
            sender=record.sender_her,
            receivers=[d.receiver_her for d in deliveries],
            client=client.name,
        )
        return record, created

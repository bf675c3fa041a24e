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
from gateway.core import Core
from gateway.errors import Conflict, Forbidden, MessageError
from gateway.log import get_logger
from gateway.model.envelope import Envelope
from gateway.registry import Party
from gateway.store.base import Direction, MessageRecord, MessageState, NewMessage, Store
from gateway.validation import rules
from gateway.validation.validator import Judgement

__all__ = ["Client", "OutboundPipeline"]

log = get_logger(__name__)


@dataclass(frozen=True)
class Client:
    """Who hands messages in: an API token's client, a drop folder, or the gateway itself."""

    name: str
    senders: frozenset[str] | None = None  # local HER-ids it may send for; None: every local party
    admin: bool = False

    def may_send_for(self, her_id: str) -> bool:
        return self.senders is None or her_id in self.senders


class OutboundPipeline:
    def __init__(self, core: Core, store: Store, clock: Clock) -> None:
        self.core = core
        self.store = store
        self.clock = clock
        self.settings = core.settings

    def checked(self, judgement: Judgement, client: Client) -> tuple[Envelope, Party, float]:
        """What an EHR hands in, whether to queue (submit) or to ask now (sync): a valid message, from a
        local party ``client`` may send for, with a plausible GenDate - its envelope, sender and the time
        it was judged at; else the error (KITH code) it is refused with."""
        if judgement.error is not None:
            raise judgement.error
        envelope = judgement.envelope
        assert envelope is not None
        sender = self.sender_for(envelope, client)
        now = self.clock.now()
        rules.check_gen_date(envelope, now=now)
        return envelope, sender, now

    def sender_for(self, envelope: Envelope, client: Client) -> Party:
        """The local party a message is from, when ``client`` may send for it; else :class:`Forbidden`."""
        sender = self.core.register.attribute(envelope.sender.her_ids if envelope.sender else ())
        if sender is None or not sender.local:
            raise Forbidden(
                f"The sender (HER-id {', '.join(envelope.sender.her_ids) if envelope.sender else '-'}) is not "
                "one local party of this gateway; it can only send for the parties it serves."
            )
        if not client.may_send_for(sender.her_id):
            raise Forbidden(f"Client {client.name} may not send for {sender.display} (HER-id {sender.her_id}).")
        return sender

    async def submit(self, data: bytes, client: Client) -> tuple[MessageRecord, bool]:
        """Take a message from a local EHR; raise the error (with its KITH code) when it is refused."""
        judgement = await asyncio.to_thread(self.core.validator.judge, data, check_receiver=False)
        envelope = judgement.envelope
        try:
            envelope, sender, now = self.checked(judgement, client)
            deliveries = await self.core.router.plan(envelope, now=now, receipts=envelope.kind.family != "apprec")
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

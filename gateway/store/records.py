"""Rows and records, once for both stores: the columns a new message and a new delivery are written with, and
what every row read back becomes. A row is anything that gives a column's value by its name (``sqlite3.Row``,
``asyncpg.Record``); both stores keep the same columns (schema.sql, postgres_schema.sql), so neither writes
or maps them its own way.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from gateway.store.base import (
    AppRecOutcome,
    DeliveryRecord,
    DeliveryState,
    Direction,
    MessageRecord,
    MessageState,
    NewDelivery,
    NewMessage,
    Refusal,
    TraceEntry,
)
from gateway.store.rules import due_at, lane

__all__ = [
    "DELIVERY_COLUMNS",
    "MESSAGE_COLUMNS",
    "REFUSAL_FIELDS",
    "Row",
    "delivery_record",
    "delivery_values",
    "message_fields",
    "message_record",
    "message_values",
    "refusal_record",
    "trace_entry",
]

#: the columns a new message is written with, in the order of :func:`message_values`
MESSAGE_COLUMNS = (
    "id, direction, kind, msg_type, msg_id, sender_her, receiver_her, conversation_ref, gen_date, state, client, "
    "dedupe_key, payload, payload_sha256, size, error_code, error_event, error_text, apprec_of, created_at, updated_at"
)
#: the columns a new delivery is written with, in the order of :func:`delivery_values`
DELIVERY_COLUMNS = (
    "message_id, receiver_her, role, channel, lane, ordered, state, next_attempt_at, deadline_at, warn_at, "
    "expires_at, created_at, updated_at"
)


def message_fields(alias: str = "m") -> str:
    """What a message is read with where its payload is not wanted - every column but the payload, and in its
    place whether there is one (a list of 500 messages does not carry 500 documents)."""
    columns = [c.strip() for c in MESSAGE_COLUMNS.split(",") if c.strip() != "payload"]
    fields = [f"{alias}.{c}" for c in (*columns, "duplicates")]
    return ", ".join([*fields, f"CASE WHEN {alias}.payload IS NULL THEN NULL ELSE '' END AS payload"])


def message_values(m: NewMessage, state: MessageState, now: float) -> tuple[Any, ...]:
    return (
        m.id,
        str(m.direction),
        m.kind,
        m.msg_type,
        m.msg_id,
        m.sender_her,
        m.receiver_her,
        m.conversation_ref,
        m.gen_date,
        str(state),
        m.client,
        m.dedupe_key,
        m.payload,
        hashlib.sha256(m.payload).hexdigest(),
        len(m.payload),
        m.error_code,
        m.error_event,
        m.error_text,
        m.apprec_of,
        now,
        now,
    )


def delivery_values(m: NewMessage, d: NewDelivery, now: float) -> tuple[Any, ...]:
    return (
        m.id,
        d.receiver_her,
        d.role,
        d.channel,
        lane(m.direction, m.sender_her, d.receiver_her),
        int(d.ordered),
        str(d.state),
        due_at(d.state, now),
        d.deadline_at,
        d.warn_at,
        d.expires_at,
        now,
        now,
    )

#: the columns of a refusal, in the order both stores write them
REFUSAL_FIELDS = (
    "at",
    "via",
    "event",
    "cause",
    "condition",
    "code",
    "claimed_sender",
    "claimed_receiver",
    "transport_message_id",
    "size",
    "sha256",
    "reason",
)


class Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...


def message_record(row: Row) -> MessageRecord:
    return MessageRecord(
        id=row["id"],
        direction=Direction(row["direction"]),
        kind=row["kind"],
        msg_type=row["msg_type"],
        msg_id=row["msg_id"],
        sender_her=row["sender_her"],
        receiver_her=row["receiver_her"],
        state=MessageState(row["state"]),
        client=row["client"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        size=row["size"],
        payload_sha256=row["payload_sha256"],
        conversation_ref=row["conversation_ref"],
        gen_date=row["gen_date"],
        error_code=row["error_code"],
        error_event=row["error_event"],
        error_text=row["error_text"],
        apprec_of=row["apprec_of"],
        duplicates=row["duplicates"],
        payload_pruned=row["payload"] is None,
    )


def delivery_record(row: Row) -> DeliveryRecord:
    apprec = None
    if row["apprec_status"] is not None:
        errors = tuple(tuple(e) for e in json.loads(row["apprec_errors"] or "[]"))
        apprec = AppRecOutcome(row["apprec_status"], errors, row["apprec_message_id"], row["apprec_at"])
    return DeliveryRecord(
        id=row["id"],
        message_id=row["message_id"],
        receiver_her=row["receiver_her"],
        role=row["role"],
        channel=row["channel"],
        lane=row["lane"],
        ordered=bool(row["ordered"]),
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
        last_error_code=row["last_error_code"],
        last_error=row["last_error"],
        deadline_at=row["deadline_at"],
        warn_at=row["warn_at"],
        expires_at=row["expires_at"],
        apprec=apprec,
    )


def trace_entry(row: Row) -> TraceEntry:
    return TraceEntry(
        at=row["at"],
        state=row["state"],
        event=row["event"],
        reason=row["reason"],
        delivery_id=row["delivery_id"],
        receiver_her=row["receiver_her"],
        attempt=row["attempt"],
        actor=row["actor"],
        detail=json.loads(row["detail"]) if row["detail"] else {},
    )


def refusal_record(row: Row) -> Refusal:
    return Refusal(id=row["id"], **{name: row[name] for name in REFUSAL_FIELDS})

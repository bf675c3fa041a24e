"""Row helpers of the SQLite store: trace lines, message summaries and row -> record mapping.

Everything here runs on the store's thread inside a transaction the caller holds.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from gateway.store.base import (
    AppRecOutcome,
    DeliveryRecord,
    DeliveryState,
    Direction,
    MessageRecord,
    MessageState,
    NewDelivery,
    NewMessage,
    TraceEntry,
)
from gateway.store.rules import due_at, lane, summarise

__all__ = [
    "delivery_record",
    "insert_message",
    "message_record",
    "refresh_summary",
    "take_duplicate",
    "trace",
    "trace_entry",
]

def trace(
    db: sqlite3.Connection,
    message_id: str,
    at: float,
    state: str,
    event: str,
    reason: str,
    *,
    delivery_id: int | None = None,
    attempt: int | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    db.execute(
        """INSERT INTO trace (message_id, delivery_id, at, state, event, reason, attempt, actor, detail)
           VALUES (?,?,?,?,?,?,?,?,?)""",
        (message_id, delivery_id, at, state, event, reason, attempt, actor, json.dumps(detail) if detail else None),
    )


def refresh_summary(db: sqlite3.Connection, message_id: str, now: float) -> None:
    """Outbound messages show the summary of their deliveries' states."""
    direction = db.execute("SELECT direction FROM messages WHERE id = ?", (message_id,)).fetchone()
    if direction is None or direction[0] != Direction.OUT:
        return
    states = [r[0] for r in db.execute("SELECT state FROM deliveries WHERE message_id = ?", (message_id,))]
    db.execute(
        "UPDATE messages SET state = ?, updated_at = ? WHERE id = ?", (str(summarise(states)), now, message_id)
    )


def message_record(row: sqlite3.Row) -> MessageRecord:
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


def delivery_record(row: sqlite3.Row) -> DeliveryRecord:
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


def trace_entry(row: sqlite3.Row) -> TraceEntry:
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


def take_duplicate(db: sqlite3.Connection, m: NewMessage, now: float) -> MessageRecord | None:
    """The message already stored under one of ``m``'s ``duplicate_of`` keys or its own dedupe key, in that
    order (counted and traced), or None."""
    row = None
    for key in (*m.duplicate_of, *((m.dedupe_key,) if m.dedupe_key else ())):
        row = db.execute("SELECT * FROM messages WHERE dedupe_key = ?", (key,)).fetchone()
        if row is not None:
            break
    if row is None:
        return None
    db.execute("UPDATE messages SET duplicates = duplicates + 1, updated_at = ? WHERE id = ?", (now, row["id"]))
    same = hashlib.sha256(m.payload).hexdigest() == row["payload_sha256"]
    what = "the same message" if same else "the same MsgId with different content"
    trace(db, row["id"], now, row["state"], "message.duplicate", f"{what} came again via {m.client}", actor=m.client)
    return message_record(db.execute("SELECT * FROM messages WHERE id = ?", (row["id"],)).fetchone())


def insert_message(
    db: sqlite3.Connection, m: NewMessage, deliveries: Sequence[NewDelivery], now: float
) -> MessageRecord:
    """Insert a message, its deliveries and their first trace lines."""
    state = m.state
    if m.direction is Direction.OUT and deliveries:
        state = summarise(str(d.state) for d in deliveries)
    db.execute(
        """INSERT INTO messages (id, direction, kind, msg_type, msg_id, sender_her, receiver_her,
           conversation_ref, gen_date, state, client, dedupe_key, payload, payload_sha256, size,
           error_code, error_event, error_text, apprec_of, created_at, updated_at)
           VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
        (
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
        ),
    )
    first = str(MessageState.ACCEPTED) if m.direction is Direction.OUT else str(m.state)
    event = "message.accepted" if m.direction is Direction.OUT else f"message.{m.state}"
    trace(db, m.id, now, first, event, m.reason or event, actor=m.client, detail=m.detail)
    for d in deliveries:
        cur = db.execute(
            """INSERT INTO deliveries (message_id, receiver_her, role, channel, lane, ordered, state,
               next_attempt_at, deadline_at, warn_at, expires_at, created_at, updated_at)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            (
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
            ),
        )
        trace(
            db,
            m.id,
            now,
            str(d.state),
            f"delivery.{d.state}",
            f"to {d.receiver_her} ({d.role}) via {d.channel}" + (f": {d.receiver_name}" if d.receiver_name else ""),
            delivery_id=cur.lastrowid,
        )
    return message_record(db.execute("SELECT * FROM messages WHERE id = ?", (m.id,)).fetchone())

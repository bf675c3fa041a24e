"""SQLite store, the receipt loop and the EHR inbox: AppRecs matched to deliveries, EHR-decided AppRecs,
the inbox the EHR pulls from, and receipt deadlines. Each function runs in one transaction the caller holds.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from gateway.errors import Conflict, NotFound
from gateway.store.base import (
    AppRecOutcome,
    DeliveryState,
    MessageRecord,
    MessageState,
    NewDelivery,
    NewMessage,
)
from gateway.store.records import message_fields, message_record
from gateway.store.rules import APPREC_SETTLES, apprec_state, transport_failure_state, transport_may_fail
from gateway.store.sqlite_rows import insert_message, refresh_summary, take_duplicate, trace
from gateway.store.trace_words import apprec_reason, outcome_detail

__all__ = [
    "ack_inbox",
    "add_apprec_for",
    "apply_apprec",
    "inbox",
    "mark_overdue",
    "mark_receipt_warnings",
    "settle_delivery",
    "transport_failed",
]


def apply_apprec(
    db: sqlite3.Connection,
    message: NewMessage,
    *,
    original_msg_id: str | None,
    original_sender_her_ids: Sequence[str],
    answering_her_ids: Sequence[str],
    outcome: AppRecOutcome | None,
    now: float,
) -> tuple[MessageRecord, str | None, bool]:
    """Store a received AppRec and settle the delivery it answers: (record, matched message id, created)."""
    existing = take_duplicate(db, message, now)
    if existing is not None:
        return existing, existing.apprec_of, False
    row = None
    if outcome is not None and original_msg_id and answering_her_ids and original_sender_her_ids:
        answering = ",".join("?" * len(answering_her_ids))
        senders = ",".join("?" * len(original_sender_her_ids))
        row = db.execute(
            f"""SELECT d.* FROM deliveries d JOIN messages m ON m.id = d.message_id
                WHERE m.direction = 'out' AND m.msg_id = ? AND m.sender_her IN ({senders})
                  AND d.receiver_her IN ({answering})
                ORDER BY d.id DESC LIMIT 1""",  # noqa: S608 - only "?" placeholders are formatted in
            (original_msg_id, *original_sender_her_ids, *answering_her_ids),
        ).fetchone()
    matched = row["message_id"] if row is not None else None
    state = message.state
    if message.state is MessageState.RECEIVED and matched is None:
        state = MessageState.UNMATCHED
    stored = NewMessage(**{**message.__dict__, "state": state, "apprec_of": matched})
    record = insert_message(db, stored, [], now)
    if row is not None and outcome is not None:
        _settle(db, row, outcome, now, apprec_ref=record.id)
    return record, matched, True


def settle_delivery(
    db: sqlite3.Connection, message_id: str, receiver_her: str, outcome: AppRecOutcome, *, now: float
) -> bool:
    """Settle the delivery of ``message_id`` to ``receiver_her`` with an AppRec outcome the transport
    reported (NHN's AppRec info) instead of an AppRec document; False when there is no such delivery."""
    row = db.execute(
        "SELECT * FROM deliveries WHERE message_id = ? AND receiver_her = ? ORDER BY id DESC LIMIT 1",
        (message_id, receiver_her),
    ).fetchone()
    if row is None:
        return False
    _settle(db, row, outcome, now, apprec_ref=outcome.apprec_message_id or None)
    return True


def transport_failed(
    db: sqlite3.Connection,
    message_id: str,
    receiver_her: str,
    *,
    now: float,
    code: str,
    error: str,
    next_attempt_at: float | None,
) -> bool:
    """The transport that took the delivery of ``message_id`` to ``receiver_her`` reports that the far end
    refused or abandoned it: the delivery is dead, or - with ``next_attempt_at`` - waits to be sent again.
    Only a delivery that is sent (or overdue), or being sent (the transport's word can come before the worker
    has recorded the send: that record then finds it settled), and has no AppRec changes; False otherwise."""
    row = db.execute(
        "SELECT * FROM deliveries WHERE message_id = ? AND receiver_her = ? ORDER BY id DESC LIMIT 1",
        (message_id, receiver_her),
    ).fetchone()
    if row is None or not transport_may_fail(
        row["state"], leased=row["lease_owner"] is not None, apprec_status=row["apprec_status"]
    ):
        return False
    state = transport_failure_state(next_attempt_at)
    db.execute(
        """UPDATE deliveries SET state = ?, next_attempt_at = ?, last_error_code = ?, last_error = ?,
           lease_owner = NULL, lease_expires_at = NULL, updated_at = ? WHERE id = ?""",
        (str(state), next_attempt_at, code, error, now, row["id"]),
    )
    detail = outcome_detail(code, next_attempt_at)
    trace(db, message_id, now, str(state), f"delivery.{state}", error, delivery_id=row["id"], detail=detail)
    refresh_summary(db, message_id, now)
    return True


def _settle(
    db: sqlite3.Connection, row: sqlite3.Row, outcome: AppRecOutcome, now: float, *, apprec_ref: str | None
) -> None:
    """A delivery's AppRec outcome: the state (if it still waits for one), the status and errors, a trace line."""
    settled = new_state = apprec_state(outcome.status)
    if row["state"] in APPREC_SETTLES:
        db.execute(
            """UPDATE deliveries SET state = ?, apprec_status = ?, apprec_errors = ?, apprec_message_id = ?,
               apprec_at = ?, lease_owner = NULL, lease_expires_at = NULL, updated_at = ? WHERE id = ?""",
            (
                str(new_state),
                outcome.status,
                json.dumps([list(e) for e in outcome.errors]),
                apprec_ref,
                now,
                now,
                row["id"],
            ),
        )
        reason = apprec_reason(outcome, row["receiver_her"], settles=True)
    else:
        new_state = DeliveryState(row["state"])
        reason = apprec_reason(outcome, row["receiver_her"], settles=False)
    trace(
        db,
        row["message_id"],
        now,
        str(new_state),
        f"apprec.{settled}",
        reason,
        delivery_id=row["id"],
        detail={"apprec_message_id": apprec_ref} if apprec_ref else None,
    )
    refresh_summary(db, row["message_id"], now)


def add_apprec_for(
    db: sqlite3.Connection,
    message_id: str,
    follow_up: tuple[NewMessage, Sequence[NewDelivery]],
    *,
    actor: str,
    now: float,
) -> None:
    """Queue the EHR's AppRec for a received message: one per message and receiver, never two."""
    row = db.execute("SELECT * FROM messages WHERE id = ? AND direction = 'in'", (message_id,)).fetchone()
    if row is None:
        raise NotFound(f"No received message {message_id}.")
    if row["state"] not in (MessageState.RECEIVED, MessageState.DELIVERED):
        raise Conflict(f"Message {message_id} is {row['state']}; it gets no AppRec from the EHR.")
    earlier = db.execute("SELECT id FROM messages WHERE apprec_of = ? AND direction = 'out'", (message_id,)).fetchone()
    if earlier is not None:
        raise Conflict(f"Message {message_id} is already answered by AppRec {earlier['id']}; one AppRec per message.")
    message, deliveries = follow_up
    insert_message(db, message, deliveries, now)
    trace(
        db,
        message_id,
        now,
        row["state"],
        "apprec.queued",
        message.reason,
        actor=actor,
        detail={"apprec_message_id": message.id},
    )


def inbox(db: sqlite3.Connection, receiver_her: str, limit: int) -> list[MessageRecord]:
    """Received messages the EHR of ``receiver_her`` has not acknowledged yet, oldest first."""
    rows = db.execute(
        f"""SELECT {message_fields()} FROM deliveries d JOIN messages m ON m.id = d.message_id
           WHERE d.state = 'inbox' AND d.receiver_her = ? ORDER BY d.id LIMIT ?""",  # noqa: S608 - fixed names
        (receiver_her, limit),
    ).fetchall()
    return [message_record(r) for r in rows]


def ack_inbox(db: sqlite3.Connection, message_id: str, *, actor: str, now: float) -> bool:
    """The EHR has taken the message: delivered. Idempotent; False when it was already acknowledged."""
    row = db.execute(
        "SELECT * FROM deliveries WHERE message_id = ? AND channel = 'ehr:inbox'", (message_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"Message {message_id} is not in any inbox.")
    if row["state"] == DeliveryState.DELIVERED:
        return False
    db.execute(
        "UPDATE deliveries SET state = 'delivered', sent_at = ?, updated_at = ? WHERE id = ?", (now, now, row["id"])
    )
    db.execute(
        "UPDATE messages SET state = ?, updated_at = ? WHERE id = ? AND state = 'received'",
        (str(MessageState.DELIVERED), now, message_id),
    )
    trace(
        db,
        message_id,
        now,
        "delivered",
        "delivery.delivered",
        f"taken from the inbox by {actor}",
        delivery_id=row["id"],
        actor=actor,
    )
    return True


def mark_overdue(db: sqlite3.Connection, now: float) -> list[tuple[str, int, str]]:
    """Sent deliveries whose AppRec deadline passed: overdue, once. Returns (message, delivery, receiver)."""
    rows = db.execute(
        "SELECT * FROM deliveries WHERE state = 'sent' AND deadline_at IS NOT NULL AND deadline_at <= ?", (now,)
    ).fetchall()
    for row in rows:
        db.execute("UPDATE deliveries SET state = 'overdue', updated_at = ? WHERE id = ?", (now, row["id"]))
        trace(
            db,
            row["message_id"],
            now,
            "overdue",
            "delivery.overdue",
            f"no AppRec from {row['receiver_her']} by the deadline; the sender must treat it as not received",
            delivery_id=row["id"],
        )
        refresh_summary(db, row["message_id"], now)
    return [(r["message_id"], r["id"], r["receiver_her"]) for r in rows]


def mark_receipt_warnings(db: sqlite3.Connection, now: float) -> list[tuple[str, int, str]]:
    """Sent deliveries past their warning threshold, warned once."""
    rows = db.execute(
        """SELECT * FROM deliveries WHERE state = 'sent' AND warned = 0 AND warn_at IS NOT NULL AND warn_at <= ?
           AND (deadline_at IS NULL OR deadline_at > ?)""",
        (now, now),
    ).fetchall()
    for row in rows:
        db.execute("UPDATE deliveries SET warned = 1 WHERE id = ?", (row["id"],))
        trace(
            db,
            row["message_id"],
            now,
            "sent",
            "delivery.receipt_late",
            f"no AppRec from {row['receiver_her']} yet; the deadline is near",
            delivery_id=row["id"],
        )
    return [(r["message_id"], r["id"], r["receiver_her"]) for r in rows]

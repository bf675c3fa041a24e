"""PostgreSQL store, the receipt loop and the EHR inbox - the PostgreSQL spelling of sqlite_receipts.py (the
rules are rules.py's). Each function runs in one transaction the caller holds; a delivery is read ``FOR
UPDATE`` before it is changed, so an AppRec and a worker's or a transport's outcome cannot both count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.errors import Conflict, NotFound
from gateway.store.base import AppRecOutcome, DeliveryState, MessageRecord, MessageState, NewDelivery, NewMessage
from gateway.store.postgres_rows import (
    Connection,
    announce,
    insert_message,
    refresh_summary,
    take_duplicate,
    trace,
)
from gateway.store.records import message_fields, message_record
from gateway.store.rules import APPREC_SETTLES, apprec_state, transport_failure_state, transport_may_fail
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


async def apply_apprec(
    conn: Connection,
    message: NewMessage,
    *,
    original_msg_id: str | None,
    original_sender_her_ids: Sequence[str],
    answering_her_ids: Sequence[str],
    outcome: AppRecOutcome | None,
    now: float,
) -> tuple[MessageRecord, str | None, bool]:
    """Store a received AppRec and settle the delivery it answers: (record, matched message id, created)."""
    existing = await take_duplicate(conn, message, now)
    if existing is not None:
        return existing, existing.apprec_of, False
    row = None
    if outcome is not None and original_msg_id and answering_her_ids and original_sender_her_ids:
        row = await conn.fetchrow(
            """SELECT d.* FROM deliveries d JOIN messages m ON m.id = d.message_id
               WHERE m.direction = 'out' AND m.msg_id = $1 AND m.sender_her = ANY($2::text[])
                 AND d.receiver_her = ANY($3::text[])
               ORDER BY d.id DESC LIMIT 1 FOR UPDATE OF d""",
            original_msg_id,
            list(original_sender_her_ids),
            list(answering_her_ids),
        )
    matched = row["message_id"] if row is not None else None
    state = message.state
    if message.state is MessageState.RECEIVED and matched is None:
        state = MessageState.UNMATCHED
    stored = NewMessage(**{**message.__dict__, "state": state, "apprec_of": matched})
    record = await insert_message(conn, stored, [], now)
    if row is not None and outcome is not None:
        await _settle(conn, row, outcome, now, apprec_ref=record.id)
    return record, matched, True


async def _latest_delivery(conn: Connection, message_id: str, receiver_her: str) -> Any:
    return await conn.fetchrow(
        "SELECT * FROM deliveries WHERE message_id = $1 AND receiver_her = $2 ORDER BY id DESC LIMIT 1 FOR UPDATE",
        message_id,
        receiver_her,
    )


async def settle_delivery(
    conn: Connection, message_id: str, receiver_her: str, outcome: AppRecOutcome, *, now: float
) -> bool:
    """Settle the delivery of ``message_id`` to ``receiver_her`` with an AppRec outcome its transport reported."""
    row = await _latest_delivery(conn, message_id, receiver_her)
    if row is None:
        return False
    await _settle(conn, row, outcome, now, apprec_ref=outcome.apprec_message_id or None)
    return True


async def transport_failed(
    conn: Connection,
    message_id: str,
    receiver_her: str,
    *,
    now: float,
    code: str,
    error: str,
    next_attempt_at: float | None,
) -> bool:
    """The far end refused or abandoned the delivery (rules.transport_may_fail says when that counts)."""
    row = await _latest_delivery(conn, message_id, receiver_her)
    if row is None or not transport_may_fail(
        row["state"], leased=row["lease_owner"] is not None, apprec_status=row["apprec_status"]
    ):
        return False
    state = transport_failure_state(next_attempt_at)
    await conn.execute(
        """UPDATE deliveries SET state = $1, next_attempt_at = $2, last_error_code = $3, last_error = $4,
           lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 WHERE id = $6""",
        str(state),
        next_attempt_at,
        code,
        error,
        now,
        row["id"],
    )
    detail = outcome_detail(code, next_attempt_at)
    await trace(conn, message_id, now, str(state), f"delivery.{state}", error, delivery_id=row["id"], detail=detail)
    await refresh_summary(conn, message_id, now)
    if next_attempt_at is not None:
        await announce(conn)
    return True


async def _settle(conn: Connection, row: Any, outcome: AppRecOutcome, now: float, *, apprec_ref: str | None) -> None:
    """A delivery's AppRec outcome: the state (if it still waits for one), the status and errors, a trace line."""
    settled = new_state = apprec_state(outcome.status)
    if row["state"] in APPREC_SETTLES:
        await conn.execute(
            """UPDATE deliveries SET state = $1, apprec_status = $2, apprec_errors = $3, apprec_message_id = $4,
               apprec_at = $5, lease_owner = NULL, lease_expires_at = NULL, updated_at = $6 WHERE id = $7""",
            str(new_state),
            outcome.status,
            json.dumps([list(e) for e in outcome.errors]),
            apprec_ref,
            now,
            now,
            row["id"],
        )
        reason = apprec_reason(outcome, row["receiver_her"], settles=True)
    else:
        new_state = DeliveryState(row["state"])
        reason = apprec_reason(outcome, row["receiver_her"], settles=False)
    await trace(
        conn,
        row["message_id"],
        now,
        str(new_state),
        f"apprec.{settled}",
        reason,
        delivery_id=row["id"],
        detail={"apprec_message_id": apprec_ref} if apprec_ref else None,
    )
    await refresh_summary(conn, row["message_id"], now)


async def add_apprec_for(
    conn: Connection,
    message_id: str,
    follow_up: tuple[NewMessage, Sequence[NewDelivery]],
    *,
    actor: str,
    now: float,
) -> None:
    """Queue the EHR's AppRec for a received message: one per message and receiver, never two."""
    row = await conn.fetchrow("SELECT * FROM messages WHERE id = $1 AND direction = 'in' FOR UPDATE", message_id)
    if row is None:
        raise NotFound(f"No received message {message_id}.")
    if row["state"] not in (MessageState.RECEIVED, MessageState.DELIVERED):
        raise Conflict(f"Message {message_id} is {row['state']}; it gets no AppRec from the EHR.")
    earlier = await conn.fetchval(
        "SELECT id FROM messages WHERE apprec_of = $1 AND direction = 'out' LIMIT 1", message_id
    )
    if earlier is not None:
        raise Conflict(f"Message {message_id} is already answered by AppRec {earlier}; one AppRec per message.")
    message, deliveries = follow_up
    await insert_message(conn, message, deliveries, now)
    await trace(
        conn,
        message_id,
        now,
        row["state"],
        "apprec.queued",
        message.reason,
        actor=actor,
        detail={"apprec_message_id": message.id},
    )


async def inbox(conn: Connection, receiver_her: str, limit: int) -> list[MessageRecord]:
    """Received messages the EHR of ``receiver_her`` has not acknowledged yet, oldest first."""
    rows = await conn.fetch(
        f"""SELECT {message_fields()} FROM deliveries d JOIN messages m ON m.id = d.message_id
           WHERE d.state = 'inbox' AND d.receiver_her = $1 ORDER BY d.id LIMIT $2""",  # noqa: S608 - fixed names
        receiver_her,
        limit,
    )
    return [message_record(r) for r in rows]


async def ack_inbox(conn: Connection, message_id: str, *, actor: str, now: float) -> bool:
    """The EHR has taken the message: delivered. Idempotent; False when it was already acknowledged."""
    row = await conn.fetchrow(
        "SELECT * FROM deliveries WHERE message_id = $1 AND channel = 'ehr:inbox' FOR UPDATE", message_id
    )
    if row is None:
        raise NotFound(f"Message {message_id} is not in any inbox.")
    if row["state"] == DeliveryState.DELIVERED:
        return False
    await conn.execute(
        "UPDATE deliveries SET state = 'delivered', sent_at = $1, updated_at = $1 WHERE id = $2", now, row["id"]
    )
    await conn.execute(
        "UPDATE messages SET state = $1, updated_at = $2 WHERE id = $3 AND state = 'received'",
        str(MessageState.DELIVERED),
        now,
        message_id,
    )
    await trace(
        conn,
        message_id,
        now,
        "delivered",
        "delivery.delivered",
        f"taken from the inbox by {actor}",
        delivery_id=row["id"],
        actor=actor,
    )
    return True


async def mark_overdue(conn: Connection, now: float) -> list[tuple[str, int, str]]:
    """Sent deliveries whose AppRec deadline passed: overdue, once. Returns (message, delivery, receiver)."""
    rows = await conn.fetch(
        """UPDATE deliveries SET state = 'overdue', updated_at = $1
           WHERE id IN (SELECT id FROM deliveries WHERE state = 'sent' AND deadline_at IS NOT NULL
                        AND deadline_at <= $1 FOR UPDATE SKIP LOCKED)
           RETURNING id, message_id, receiver_her""",
        now,
    )
    rows = sorted(rows, key=lambda r: (r["message_id"], r["id"]))  # messages locked in the order of their ids
    for row in rows:
        await trace(
            conn,
            row["message_id"],
            now,
            "overdue",
            "delivery.overdue",
            f"no AppRec from {row['receiver_her']} by the deadline; the sender must treat it as not received",
            delivery_id=row["id"],
        )
        await refresh_summary(conn, row["message_id"], now)
    return [(r["message_id"], r["id"], r["receiver_her"]) for r in rows]


async def mark_receipt_warnings(conn: Connection, now: float) -> list[tuple[str, int, str]]:
    """Sent deliveries past their warning threshold, warned once."""
    rows = await conn.fetch(
        """UPDATE deliveries SET warned = 1
           WHERE id IN (SELECT id FROM deliveries WHERE state = 'sent' AND warned = 0 AND warn_at IS NOT NULL
                        AND warn_at <= $1 AND (deadline_at IS NULL OR deadline_at > $1) FOR UPDATE SKIP LOCKED)
           RETURNING id, message_id, receiver_her""",
        now,
    )
    rows = sorted(rows, key=lambda r: r["id"])
    for row in rows:
        await trace(
            conn,
            row["message_id"],
            now,
            "sent",
            "delivery.receipt_late",
            f"no AppRec from {row['receiver_her']} yet; the deadline is near",
            delivery_id=row["id"],
        )
    return [(r["message_id"], r["id"], r["receiver_her"]) for r in rows]

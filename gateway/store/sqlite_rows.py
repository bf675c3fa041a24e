"""Row helpers of the SQLite store: trace lines, message summaries, inserting a message and finding its
duplicate (rows become records in records.py, shared with the PostgreSQL store).

Everything here runs on the store's thread inside a transaction the caller holds.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from gateway.store.base import (
    Direction,
    MessageRecord,
    NewDelivery,
    NewMessage,
)
from gateway.store.records import (
    DELIVERY_COLUMNS,
    MESSAGE_COLUMNS,
    delivery_values,
    message_fields,
    message_record,
    message_values,
)
from gateway.store.rules import first_state, summarise
from gateway.store.trace_words import delivery_reason, duplicate_reason, first_line

__all__ = ["insert_message", "refresh_summary", "take_duplicate", "trace"]


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
    trace(db, row["id"], now, row["state"], "message.duplicate", duplicate_reason(same, m.client), actor=m.client)
    return _message(db, row["id"])


def insert_message(
    db: sqlite3.Connection, m: NewMessage, deliveries: Sequence[NewDelivery], now: float
) -> MessageRecord:
    """Insert a message, its deliveries and their first trace lines."""
    columns = MESSAGE_COLUMNS.count(",") + 1
    db.execute(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ({','.join('?' * columns)})",  # noqa: S608 - fixed names
        message_values(m, first_state(m, deliveries), now),
    )
    state, event, reason = first_line(m)
    trace(db, m.id, now, state, event, reason, actor=m.client, detail=m.detail)
    for d in deliveries:
        marks = ",".join("?" * (DELIVERY_COLUMNS.count(",") + 1))
        cur = db.execute(
            f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES ({marks})",  # noqa: S608 - fixed names
            delivery_values(m, d, now),
        )
        trace(db, m.id, now, str(d.state), f"delivery.{d.state}", delivery_reason(d), delivery_id=cur.lastrowid)
    return _message(db, m.id)


def _message(db: sqlite3.Connection, message_id: str) -> MessageRecord:
    row = db.execute(f"SELECT {message_fields()} FROM messages m WHERE m.id = ?", (message_id,)).fetchone()  # noqa: S608
    return message_record(row)

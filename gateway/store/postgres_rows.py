"""Row helpers of the PostgreSQL store: trace lines, message summaries, inserting a message and finding its
duplicate - the PostgreSQL spelling of sqlite_rows.py, with the rules of rules.py and the records of
records.py. Everything here runs inside a transaction the caller holds on ``conn``.

Concurrency (several gateway processes, READ COMMITTED): a message's summary is computed with the message's
row locked, after its delivery was changed, so two processes settling two deliveries of one message cannot
each write a summary that misses the other's change (rows are always locked delivery first, then message;
several messages in the order of their ids). New deliveries of one ordered lane are inserted one
transaction at a time (an advisory lock per lane), so a lane's ids become visible in their order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from gateway.store.base import Direction, MessageRecord, NewDelivery, NewMessage
from gateway.store.records import (
    DELIVERY_COLUMNS,
    MESSAGE_COLUMNS,
    delivery_values,
    message_fields,
    message_record,
    message_values,
)
from gateway.store.rules import due_at, first_state, lane, summarise
from gateway.store.trace_words import delivery_reason, duplicate_reason, first_line

__all__ = [
    "LANE_LOCKS",
    "WORK_CHANNEL",
    "Connection",
    "announce",
    "insert_message",
    "message_by_id",
    "refresh_summary",
    "take_duplicate",
    "trace",
]

Connection = Any  # asyncpg.Connection (or a pool's proxy of one): asyncpg ships no types

#: the advisory lock class of the ordered lanes (the second key is the lane's hash)
LANE_LOCKS = 72_001
#: the LISTEN/NOTIFY channel of due work (PostgresStore.watch)
WORK_CHANNEL = "gateway_work"


async def trace(
    conn: Connection,
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
    await conn.execute(
        """INSERT INTO trace (message_id, delivery_id, at, state, event, reason, attempt, actor, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        message_id,
        delivery_id,
        at,
        state,
        event,
        reason,
        attempt,
        actor,
        json.dumps(detail) if detail else None,
    )


async def announce(conn: Connection) -> None:
    """Tell the other processes' idle workers that work is due, when this transaction commits (NOTIFY is
    delivered on commit, once per transaction however often it is said)."""
    await conn.execute(f"NOTIFY {WORK_CHANNEL}")


async def refresh_summary(conn: Connection, message_id: str, now: float) -> None:
    """Outbound messages show the summary of their deliveries' states (read with the message row locked)."""
    direction = await conn.fetchval("SELECT direction FROM messages WHERE id = $1 FOR UPDATE", message_id)
    if direction != Direction.OUT:
        return
    states = [r["state"] for r in await conn.fetch("SELECT state FROM deliveries WHERE message_id = $1", message_id)]
    await conn.execute(
        "UPDATE messages SET state = $1, updated_at = $2 WHERE id = $3", str(summarise(states)), now, message_id
    )


async def message_by_id(conn: Connection, message_id: str) -> MessageRecord:
    row = await conn.fetchrow(f"SELECT {message_fields()} FROM messages m WHERE m.id = $1", message_id)  # noqa: S608
    return message_record(row)


async def take_duplicate(conn: Connection, m: NewMessage, now: float) -> MessageRecord | None:
    """The message already stored under one of ``m``'s ``duplicate_of`` keys or its own dedupe key, in that
    order (counted and traced), or None."""
    row = None
    for key in (*m.duplicate_of, *((m.dedupe_key,) if m.dedupe_key else ())):
        row = await conn.fetchrow("SELECT * FROM messages WHERE dedupe_key = $1 FOR UPDATE", key)
        if row is not None:
            break
    if row is None:
        return None
    await conn.execute(
        "UPDATE messages SET duplicates = duplicates + 1, updated_at = $1 WHERE id = $2", now, row["id"]
    )
    same = hashlib.sha256(m.payload).hexdigest() == row["payload_sha256"]
    await trace(
        conn, row["id"], now, row["state"], "message.duplicate", duplicate_reason(same, m.client), actor=m.client
    )
    return await message_by_id(conn, row["id"])


async def insert_message(
    conn: Connection, m: NewMessage, deliveries: Sequence[NewDelivery], now: float
) -> MessageRecord:
    """Insert a message, its deliveries and their first trace lines."""
    await conn.execute(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ({_placeholders(MESSAGE_COLUMNS)})",  # noqa: S608
        *message_values(m, first_state(m, deliveries), now),
    )
    state, event, reason = first_line(m)
    await trace(conn, m.id, now, state, event, reason, actor=m.client, detail=m.detail)
    # an ordered lane takes one new delivery at a time, until its transaction ends: ids are handed out when a
    # row is inserted but seen when it commits, so without this a later delivery could commit - and be
    # claimed as the lane's head - before an earlier one of the same lane becomes visible
    for key in sorted({lane(m.direction, m.sender_her, d.receiver_her) for d in deliveries if d.ordered}):
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LANE_LOCKS, key)
    for d in deliveries:
        delivery_id = await conn.fetchval(
            f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES ({_placeholders(DELIVERY_COLUMNS)}) RETURNING id",  # noqa: S608
            *delivery_values(m, d, now),
        )
        await trace(conn, m.id, now, str(d.state), f"delivery.{d.state}", delivery_reason(d), delivery_id=delivery_id)
    if any(due_at(d.state, now) is not None for d in deliveries):
        await announce(conn)
    return await message_by_id(conn, m.id)


def _placeholders(columns: str) -> str:
    """``$1, $2, ...`` for a fixed column list (names only ever come from records.py)."""
    return ", ".join(f"${n}" for n in range(1, columns.count(",") + 2))

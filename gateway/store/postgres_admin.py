"""PostgreSQL store, operator control and housekeeping - the PostgreSQL spelling of sqlite_admin.py (retry,
cancel, pause and resume, route states and counts, retention, refused packets, the adapters' meta values),
with the state sets of rules.py. Each function runs in one transaction the caller holds.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import Conflict, NotFound
from gateway.store.base import Refusal, RouteState
from gateway.store.postgres_rows import Connection, announce, refresh_summary, trace
from gateway.store.records import REFUSAL_FIELDS, refusal_record
from gateway.store.rules import FINISHED, MESSAGE_STATES_KEPT, RETRYABLE_BY_OPERATOR
from gateway.store.trace_words import Ttl, retried_ttl

__all__ = [
    "add_refusal",
    "cancel",
    "forget_meta",
    "get_meta",
    "pause",
    "prune",
    "queue_counts",
    "refusals",
    "resume",
    "retry",
    "retry_dead",
    "route_states",
    "set_meta",
    "take_turn",
]


_REFUSAL_COLUMNS = ", ".join(REFUSAL_FIELDS)


async def _requeue(conn: Connection, row: Any, *, actor: str, now: float, ttl_s: Ttl, why: str) -> None:
    ttl = retried_ttl(ttl_s, row["receiver_her"])
    await conn.execute(
        """UPDATE deliveries SET state = 'queued', next_attempt_at = $1, attempts = 0, expires_at = $2,
           lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 WHERE id = $3""",
        now,
        now + ttl,
        row["id"],
    )
    await trace(
        conn,
        row["message_id"],
        now,
        "queued",
        "operator.retry",
        f"{why} by {actor} (was {row['state']})",
        delivery_id=row["id"],
        actor=actor,
    )
    await refresh_summary(conn, row["message_id"], now)
    await announce(conn)


async def retry(conn: Connection, message_id: str, *, actor: str, now: float, ttl_s: Ttl) -> int:
    """Send a message's dead, waiting or cancelled deliveries again now, with a fresh attempt count.
    A delivery being sent right now (leased) is left alone, so nothing goes out twice at once."""
    if await conn.fetchval("SELECT 1 FROM messages WHERE id = $1", message_id) is None:
        raise NotFound(f"No message {message_id}.")
    rows = await conn.fetch(
        """SELECT * FROM deliveries WHERE message_id = $1 AND state = ANY($2::text[])
           AND (lease_owner IS NULL OR lease_expires_at <= $3) ORDER BY id FOR UPDATE""",
        message_id,
        list(RETRYABLE_BY_OPERATOR),
        now,
    )
    if await _pruned(conn, message_id):
        raise Conflict(f"Message {message_id} has been pruned after the retention period; nothing to send.")
    if not rows:
        raise Conflict(
            f"Message {message_id} has no delivery that can be retried now (only dead, waiting or cancelled ones "
            "that are not being sent)."
        )
    for row in rows:
        await _requeue(conn, row, actor=actor, now=now, ttl_s=ttl_s, why="retried")
    return len(rows)


async def retry_dead(conn: Connection, *, route: str | None, actor: str, now: float, ttl_s: Ttl) -> int:
    """Every dead delivery (of one route, a receiver HER-id) back in the queue."""
    rows = await conn.fetch(
        """SELECT d.* FROM deliveries d JOIN messages m ON m.id = d.message_id
           WHERE d.state = 'dead' AND ($1::text IS NULL OR d.receiver_her = $1) AND m.payload IS NOT NULL
           ORDER BY d.message_id, d.id FOR UPDATE OF d""",
        route,
    )
    requeued = 0
    for row in rows:  # messages locked in the order of their ids, as everywhere
        if not await _pruned(conn, row["message_id"]):
            await _requeue(conn, row, actor=actor, now=now, ttl_s=ttl_s, why="dead letter retried")
            requeued += 1
    return requeued


async def _pruned(conn: Connection, message_id: str) -> bool:
    """Whether the message's payload is gone - read with its row locked, after its deliveries were, so a prune
    running now either finished first (and this says so) or waits for this transaction."""
    return bool(await conn.fetchval("SELECT payload IS NULL FROM messages WHERE id = $1 FOR UPDATE", message_id))


async def cancel(conn: Connection, message_id: str, *, actor: str, now: float) -> int:
    """Stop sending a message: its waiting deliveries become cancelled."""
    if await conn.fetchval("SELECT 1 FROM messages WHERE id = $1", message_id) is None:
        raise NotFound(f"No message {message_id}.")
    rows = await conn.fetch(
        """SELECT * FROM deliveries WHERE message_id = $1 AND state IN ('queued', 'retrying', 'dead')
           ORDER BY id FOR UPDATE""",
        message_id,
    )
    if not rows:
        raise Conflict(f"Message {message_id} has nothing left to cancel.")
    for row in rows:
        await conn.execute(
            """UPDATE deliveries SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
               updated_at = $1 WHERE id = $2""",
            now,
            row["id"],
        )
        await trace(
            conn,
            message_id,
            now,
            "cancelled",
            "operator.cancel",
            f"cancelled by {actor} (was {row['state']})",
            delivery_id=row["id"],
            actor=actor,
        )
    await refresh_summary(conn, message_id, now)
    return len(rows)


async def pause(conn: Connection, route: str, *, actor: str, now: float) -> None:
    await conn.execute(
        """INSERT INTO routes (route, paused, paused_by, paused_at) VALUES ($1, 1, $2, $3)
           ON CONFLICT (route) DO UPDATE SET paused = 1, paused_by = excluded.paused_by,
           paused_at = excluded.paused_at""",
        route,
        actor,
        now,
    )
    await _trace_route(conn, route, now, "operator.pause", f"route {route} paused by {actor}", actor)


async def resume(conn: Connection, route: str, *, actor: str, now: float) -> None:
    await conn.execute("UPDATE routes SET paused = 0, paused_by = NULL, paused_at = NULL WHERE route = $1", route)
    await conn.execute(
        """UPDATE deliveries SET next_attempt_at = $1
           WHERE receiver_her = $2 AND state = 'queued' AND next_attempt_at > $1""",
        now,
        route,
    )
    await _trace_route(conn, route, now, "operator.resume", f"route {route} resumed by {actor}", actor)
    await announce(conn)


async def _trace_route(conn: Connection, route: str, now: float, event: str, reason: str, actor: str) -> None:
    """A pause or resume shows in the trace of every message waiting on the route."""
    rows = await conn.fetch(
        """SELECT id, message_id, state FROM deliveries WHERE receiver_her = $1 AND state IN ('queued', 'retrying')
           ORDER BY id""",
        route,
    )
    for row in rows:
        await trace(conn, row["message_id"], now, row["state"], event, reason, delivery_id=row["id"], actor=actor)


async def route_states(conn: Connection) -> list[RouteState]:
    rows = await conn.fetch(
        """SELECT r.route, COALESCE(p.paused, 0) AS paused, p.paused_by
           FROM (SELECT DISTINCT receiver_her AS route FROM deliveries WHERE state IN ('queued', 'retrying', 'dead')
                 UNION SELECT route FROM routes) r
           LEFT JOIN routes p ON p.route = r.route ORDER BY r.route"""
    )
    return [RouteState(r["route"], bool(r["paused"]), r["paused_by"]) for r in rows]


async def queue_counts(conn: Connection) -> dict[str, dict[str, int]]:
    """Per route: how many deliveries in each state that still needs the worker or an operator."""
    found: dict[str, dict[str, int]] = {}
    for row in await conn.fetch(
        """SELECT receiver_her, state, COUNT(*) AS n FROM deliveries
           WHERE state IN ('queued', 'retrying', 'dead', 'sent', 'overdue') GROUP BY receiver_her, state"""
    ):
        found.setdefault(row["receiver_her"], {})[row["state"]] = row["n"]
    return found


async def prune(conn: Connection, *, before: float, now: float) -> int:
    """Drop the payload of finished messages older than ``before``; their metadata and trace stay.
    A delivery that expects no AppRec (an AppRec itself) is finished once sent."""
    rows = await conn.fetch(
        """UPDATE messages SET payload = NULL, updated_at = $1
           WHERE id IN (SELECT m.id FROM messages m WHERE m.payload IS NOT NULL AND m.created_at < $2
                        AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id
                                        AND NOT (d.state = ANY($3::text[]))
                                        AND NOT (d.state = 'sent' AND d.deadline_at IS NULL))
                        AND NOT (m.state = ANY($4::text[]))
                        FOR UPDATE SKIP LOCKED)
           RETURNING id, state""",
        now,
        before,
        list(FINISHED),
        list(MESSAGE_STATES_KEPT),
    )
    for row in sorted(rows, key=lambda r: r["id"]):
        await trace(conn, row["id"], now, row["state"], "message.pruned", "payload dropped after the retention period")
    return len(rows)


async def take_turn(conn: Connection, job: str, turn: int, owner: str, now: float) -> bool:
    taken = await conn.fetchval(
        """INSERT INTO job_turns (job, turn, taken_by, taken_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (job) DO UPDATE SET turn = excluded.turn, taken_by = excluded.taken_by,
           taken_at = excluded.taken_at WHERE job_turns.turn < excluded.turn
           RETURNING job""",
        job,
        turn,
        owner,
        now,
    )
    return taken is not None


async def get_meta(conn: Connection, key: str) -> str | None:
    value = await conn.fetchval("SELECT value FROM meta WHERE key = $1", key)
    return None if value is None else str(value)


async def set_meta(conn: Connection, key: str, value: str | None) -> None:
    """Set a meta value; None deletes it."""
    if value is None:
        await conn.execute("DELETE FROM meta WHERE key = $1", key)
        return
    await conn.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        key,
        value,
    )


async def forget_meta(conn: Connection, first: str, last: str) -> None:
    """Delete the meta keys from ``first`` up to, not including, ``last`` (byte order: the column's collation)."""
    await conn.execute("DELETE FROM meta WHERE key >= $1 AND key < $2", first, last)


async def add_refusal(conn: Connection, r: Refusal, *, keep: int) -> int:
    """Insert one refusal and drop those beyond the newest ``keep`` (ids only grow, so this stays cheap)."""
    new_id = await conn.fetchval(
        f"INSERT INTO refusals ({_REFUSAL_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) RETURNING id",  # noqa: S608
        *(getattr(r, name) for name in REFUSAL_FIELDS),
    )
    await conn.execute("DELETE FROM refusals WHERE id <= $1", int(new_id) - max(keep, 1))
    return int(new_id)


async def refusals(conn: Connection, limit: int, before: int | None) -> list[Refusal]:
    rows = await conn.fetch(
        f"SELECT id, {_REFUSAL_COLUMNS} FROM refusals WHERE id < $1 ORDER BY id DESC LIMIT $2",  # noqa: S608
        before if before is not None else 2**62,
        limit,
    )
    return [refusal_record(row) for row in rows]

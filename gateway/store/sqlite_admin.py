"""SQLite store, operator control and housekeeping: retry, cancel, pause/resume a route, pruning, upkeep.

Every operator action is one transaction and leaves a trace line naming who did it.
"""

from __future__ import annotations

import sqlite3

from gateway.errors import Conflict, NotFound
from gateway.store.base import Refusal, RouteState
from gateway.store.records import REFUSAL_FIELDS, refusal_record
from gateway.store.rules import FINISHED, MESSAGE_STATES_KEPT, RETRYABLE_BY_OPERATOR
from gateway.store.sqlite_rows import refresh_summary, trace
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




def _requeue(db: sqlite3.Connection, row: sqlite3.Row, *, actor: str, now: float, ttl_s: Ttl, why: str) -> None:
    ttl = retried_ttl(ttl_s, row["receiver_her"])
    db.execute(
        """UPDATE deliveries SET state = 'queued', next_attempt_at = ?, attempts = 0, expires_at = ?,
           lease_owner = NULL, lease_expires_at = NULL, updated_at = ? WHERE id = ?""",
        (now, now + ttl, now, row["id"]),
    )
    trace(
        db,
        row["message_id"],
        now,
        "queued",
        "operator.retry",
        f"{why} by {actor} (was {row['state']})",
        delivery_id=row["id"],
        actor=actor,
    )
    refresh_summary(db, row["message_id"], now)


def retry(db: sqlite3.Connection, message_id: str, *, actor: str, now: float, ttl_s: Ttl) -> int:
    """Send a message's dead, waiting or cancelled deliveries again now, with a fresh attempt count.
    A delivery being sent right now (leased) is left alone, so nothing goes out twice at once."""
    message = db.execute("SELECT payload FROM messages WHERE id = ?", (message_id,)).fetchone()
    if message is None:
        raise NotFound(f"No message {message_id}.")
    if message["payload"] is None:
        raise Conflict(f"Message {message_id} has been pruned after the retention period; nothing to send.")
    marks = ",".join("?" * len(RETRYABLE_BY_OPERATOR))
    rows = db.execute(
        f"""SELECT * FROM deliveries WHERE message_id = ? AND state IN ({marks})
            AND (lease_owner IS NULL OR lease_expires_at <= ?)""",  # noqa: S608 - only "?" placeholders
        (message_id, *RETRYABLE_BY_OPERATOR, now),
    ).fetchall()
    if not rows:
        raise Conflict(
            f"Message {message_id} has no delivery that can be retried now (only dead, waiting or cancelled ones "
            "that are not being sent)."
        )
    for row in rows:
        _requeue(db, row, actor=actor, now=now, ttl_s=ttl_s, why="retried")
    return len(rows)


def retry_dead(db: sqlite3.Connection, *, route: str | None, actor: str, now: float, ttl_s: Ttl) -> int:
    """Every dead delivery (of one route, a receiver HER-id) back in the queue."""
    rows = db.execute(
        """SELECT d.* FROM deliveries d JOIN messages m ON m.id = d.message_id
           WHERE d.state = 'dead' AND (? IS NULL OR d.receiver_her = ?) AND m.payload IS NOT NULL""",
        (route, route),
    ).fetchall()
    for row in rows:
        _requeue(db, row, actor=actor, now=now, ttl_s=ttl_s, why="dead letter retried")
    return len(rows)


def cancel(db: sqlite3.Connection, message_id: str, *, actor: str, now: float) -> int:
    """Stop sending a message: its waiting deliveries become cancelled."""
    if db.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone() is None:
        raise NotFound(f"No message {message_id}.")
    rows = db.execute(
        "SELECT * FROM deliveries WHERE message_id = ? AND state IN ('queued', 'retrying', 'dead')", (message_id,)
    ).fetchall()
    if not rows:
        raise Conflict(f"Message {message_id} has nothing left to cancel.")
    for row in rows:
        db.execute(
            """UPDATE deliveries SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
               WHERE id = ?""",
            (now, row["id"]),
        )
        trace(
            db,
            message_id,
            now,
            "cancelled",
            "operator.cancel",
            f"cancelled by {actor} (was {row['state']})",
            delivery_id=row["id"],
            actor=actor,
        )
    refresh_summary(db, message_id, now)
    return len(rows)


def pause(db: sqlite3.Connection, route: str, *, actor: str, now: float) -> None:
    db.execute(
        """INSERT INTO routes (route, paused, paused_by, paused_at) VALUES (?, 1, ?, ?)
           ON CONFLICT(route) DO UPDATE SET paused = 1, paused_by = excluded.paused_by,
           paused_at = excluded.paused_at""",
        (route, actor, now),
    )
    _trace_route(db, route, now, "operator.pause", f"route {route} paused by {actor}", actor)


def resume(db: sqlite3.Connection, route: str, *, actor: str, now: float) -> None:
    db.execute("UPDATE routes SET paused = 0, paused_by = NULL, paused_at = NULL WHERE route = ?", (route,))
    db.execute(
        "UPDATE deliveries SET next_attempt_at = ? WHERE receiver_her = ? AND state = 'queued' AND next_attempt_at > ?",
        (now, route, now),
    )
    _trace_route(db, route, now, "operator.resume", f"route {route} resumed by {actor}", actor)


def _trace_route(db: sqlite3.Connection, route: str, now: float, event: str, reason: str, actor: str) -> None:
    """A pause or resume shows in the trace of every message waiting on the route."""
    for row in db.execute(
        "SELECT id, message_id, state FROM deliveries WHERE receiver_her = ? AND state IN ('queued', 'retrying')",
        (route,),
    ).fetchall():
        trace(db, row["message_id"], now, row["state"], event, reason, delivery_id=row["id"], actor=actor)


def route_states(db: sqlite3.Connection) -> list[RouteState]:
    rows = db.execute(
        """SELECT r.route, COALESCE(p.paused, 0) AS paused, p.paused_by
           FROM (SELECT DISTINCT receiver_her AS route FROM deliveries WHERE state IN ('queued', 'retrying', 'dead')
                 UNION SELECT route FROM routes) r
           LEFT JOIN routes p ON p.route = r.route ORDER BY r.route"""
    ).fetchall()
    return [RouteState(r["route"], bool(r["paused"]), r["paused_by"]) for r in rows]


def queue_counts(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Per route: how many deliveries in each state that still needs the worker or an operator."""
    found: dict[str, dict[str, int]] = {}
    for row in db.execute(
        """SELECT receiver_her, state, COUNT(*) FROM deliveries
           WHERE state IN ('queued', 'retrying', 'dead', 'sent', 'overdue') GROUP BY receiver_her, state"""
    ):
        found.setdefault(row[0], {})[row[1]] = row[2]
    return found


def prune(db: sqlite3.Connection, *, before: float, now: float) -> int:
    """Drop the payload of finished messages older than ``before``; their metadata and trace stay.
    A delivery that expects no AppRec (an AppRec itself) is finished once sent."""
    finished, kept = ",".join("?" * len(FINISHED)), ",".join("?" * len(MESSAGE_STATES_KEPT))
    rows = db.execute(
        f"""SELECT m.id, m.state FROM messages m WHERE m.payload IS NOT NULL AND m.created_at < ?
            AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id
                            AND d.state NOT IN ({finished})
                            AND NOT (d.state = 'sent' AND d.deadline_at IS NULL))
            AND m.state NOT IN ({kept})""",  # noqa: S608 - only "?" placeholders are formatted in
        (before, *FINISHED, *MESSAGE_STATES_KEPT),
    ).fetchall()
    for row in rows:
        db.execute("UPDATE messages SET payload = NULL, updated_at = ? WHERE id = ?", (now, row["id"]))
        trace(db, row["id"], now, row["state"], "message.pruned", "payload dropped after the retention period")
    return len(rows)


def take_turn(db: sqlite3.Connection, job: str, turn: int, owner: str, now: float) -> bool:
    cursor = db.execute(
        """INSERT INTO job_turns (job, turn, taken_by, taken_at) VALUES (?, ?, ?, ?)
           ON CONFLICT(job) DO UPDATE SET turn = excluded.turn, taken_by = excluded.taken_by,
           taken_at = excluded.taken_at WHERE job_turns.turn < excluded.turn""",
        (job, turn, owner, now),
    )
    return cursor.rowcount == 1


def get_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def forget_meta(db: sqlite3.Connection, first: str, last: str) -> None:
    """Delete the meta keys from ``first`` up to, not including, ``last`` (the primary key's order)."""
    db.execute("DELETE FROM meta WHERE key >= ? AND key < ?", (first, last))


def set_meta(db: sqlite3.Connection, key: str, value: str | None) -> None:
    """Set a meta value; None deletes it."""
    if value is None:
        db.execute("DELETE FROM meta WHERE key = ?", (key,))
        return
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


_REFUSAL_FIELDS = ", ".join(REFUSAL_FIELDS)


def add_refusal(db: sqlite3.Connection, r: Refusal, *, keep: int) -> int:
    """Insert one refusal and drop those beyond the newest ``keep`` (ids only grow, so this stays cheap)."""
    cursor = db.execute(
        f"INSERT INTO refusals ({_REFUSAL_FIELDS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608 - fixed names
        (r.at, r.via, r.event, r.cause, r.condition, r.code, r.claimed_sender, r.claimed_receiver,
         r.transport_message_id, r.size, r.sha256, r.reason),
    )  # fmt: skip
    new_id = int(cursor.lastrowid or 0)
    db.execute("DELETE FROM refusals WHERE id <= ?", (new_id - max(keep, 1),))
    return new_id


def refusals(db: sqlite3.Connection, limit: int, before: int | None) -> list[Refusal]:
    rows = db.execute(
        f"SELECT id, {_REFUSAL_FIELDS} FROM refusals WHERE id < ? ORDER BY id DESC LIMIT ?",  # noqa: S608
        (before if before is not None else 2**62, limit),
    ).fetchall()
    return [refusal_record(row) for row in rows]

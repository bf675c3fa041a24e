"""SQLite store, the delivery queue: claiming due deliveries under a lease, taking back the leases of a
gone worker, and recording how a send went.

Each function runs in one transaction the caller holds (with synchronous=NORMAL: this is the worker's
bookkeeping, see sqlite.py).
"""

from __future__ import annotations

import sqlite3

from gateway.store.base import Claim, DeliveryState
from gateway.store.records import delivery_record, message_record
from gateway.store.rules import may_finish, stamps_sent_at
from gateway.store.sqlite_rows import refresh_summary, trace
from gateway.store.trace_words import lease_expired_reason, outcome_detail

__all__ = ["claim", "finish", "reap_leases", "release"]


def claim(
    db: sqlite3.Connection,
    owner: str,
    now: float,
    limit: int,
    lease_s: float,
    exclude: list[str],
    route_limits: dict[str, int],
    skip: set[int],
) -> list[Claim]:
    blocked = set(exclude) | {r[0] for r in db.execute("SELECT route FROM routes WHERE paused = 1")}
    blocked |= {route for route, room in route_limits.items() if room <= 0}
    candidates = [
        row
        for row in _ordered_heads(db) + _unordered_due(db, now, limit, blocked)
        if row["next_attempt_at"] <= now
        and (row["lease_expires_at"] is None or row["lease_expires_at"] <= now)
        and row["receiver_her"] not in blocked
        and row["id"] not in skip
    ]
    rows: list[sqlite3.Row] = []
    taken: dict[str, int] = {}
    for row in sorted(candidates, key=lambda r: (r["next_attempt_at"], r["id"])):
        route = row["receiver_her"]
        if route in route_limits and taken.get(route, 0) >= route_limits[route]:
            continue  # the route's share of sends in flight is used up
        taken[route] = taken.get(route, 0) + 1
        rows.append(row)
        if len(rows) >= limit:
            break
    claims = []
    expires = now + lease_s
    for row in rows:
        if row["lease_owner"] is not None:
            _trace_lease_expired(db, row, now)
        db.execute(
            "UPDATE deliveries SET lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1 WHERE id = ?",
            (owner, expires, row["id"]),
        )
        message = db.execute("SELECT * FROM messages WHERE id = ?", (row["message_id"],)).fetchone()
        delivery = delivery_record(db.execute("SELECT * FROM deliveries WHERE id = ?", (row["id"],)).fetchone())
        claims.append(Claim(delivery, message_record(message), bytes(message["payload"] or b""), owner, expires))
    return claims


def reap_leases(db: sqlite3.Connection, *, now: float) -> int:
    """Take back leases whose worker is gone, so even a paused route's deliveries show as waiting."""
    rows = db.execute(
        "SELECT * FROM deliveries WHERE lease_owner IS NOT NULL AND lease_expires_at <= ?", (now,)
    ).fetchall()
    for row in rows:
        db.execute("UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ?", (row["id"],))
        _trace_lease_expired(db, row, now)
    return len(rows)


def _trace_lease_expired(db: sqlite3.Connection, row: sqlite3.Row, now: float) -> None:
    trace(
        db,
        row["message_id"],
        now,
        row["state"],
        "delivery.lease_expired",
        lease_expired_reason(row["lease_owner"], row["attempts"]),
        delivery_id=row["id"],
        attempt=row["attempts"],
    )


def _ordered_heads(db: sqlite3.Connection) -> list[sqlite3.Row]:
    """The oldest active delivery of every ordered lane: a skip-scan over the lane index, one seek per
    lane, so a backlog of 100,000 in a few lanes costs a few lookups, not a scan."""
    return db.execute(
        """WITH RECURSIVE lanes(lane) AS (
               SELECT MIN(lane) FROM deliveries WHERE state IN ('queued', 'retrying') AND ordered = 1
               UNION ALL
               SELECT (SELECT MIN(d.lane) FROM deliveries d WHERE d.state IN ('queued', 'retrying')
                       AND d.ordered = 1 AND d.lane > lanes.lane)
               FROM lanes WHERE lanes.lane IS NOT NULL)
           SELECT d.* FROM lanes JOIN deliveries d ON d.id = (
               SELECT e.id FROM deliveries e WHERE e.lane = lanes.lane AND e.state IN ('queued', 'retrying')
               AND e.ordered = 1 ORDER BY e.id LIMIT 1)
           WHERE lanes.lane IS NOT NULL"""
    ).fetchall()


def _unordered_due(db: sqlite3.Connection, now: float, limit: int, blocked: set[str]) -> list[sqlite3.Row]:
    marks = ",".join("?" * len(blocked))
    return db.execute(
        f"""SELECT * FROM deliveries WHERE state IN ('queued', 'retrying') AND ordered = 0
           AND next_attempt_at <= ? AND (lease_expires_at IS NULL OR lease_expires_at <= ?)
           {f"AND receiver_her NOT IN ({marks})" if blocked else ""}
           ORDER BY next_attempt_at, id LIMIT ?""",  # noqa: S608 - only "?" placeholders are formatted in
        (now, now, *sorted(blocked), limit),
    ).fetchall()


def finish(
    db: sqlite3.Connection,
    delivery_id: int,
    owner: str | None,
    now: float,
    state: DeliveryState,
    event: str,
    reason: str,
    code: str | None,
    error: str | None,
    next_attempt_at: float | None,
) -> bool:
    row = db.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    if row is None or not may_finish(row["state"], row["lease_owner"], owner):
        return False
    db.execute(
        """UPDATE deliveries SET state = ?, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?,
           next_attempt_at = ?, sent_at = COALESCE(?, sent_at),
           last_error_code = COALESCE(?, last_error_code), last_error = COALESCE(?, last_error)
           WHERE id = ?""",
        (
            str(state),
            now,
            next_attempt_at,
            now if stamps_sent_at(state) else None,
            code,
            error,
            delivery_id,
        ),
    )
    if state is DeliveryState.DELIVERED:  # an inbound message is delivered once its EHR has it
        db.execute(
            "UPDATE messages SET state = 'delivered', updated_at = ? WHERE id = ? AND state = 'received'",
            (now, row["message_id"]),
        )
    detail = outcome_detail(code, next_attempt_at)
    trace(
        db,
        row["message_id"],
        now,
        str(state),
        event,
        reason,
        delivery_id=delivery_id,
        attempt=row["attempts"],
        actor=owner,
        detail=detail,
    )
    refresh_summary(db, row["message_id"], now)
    return True


def release(db: sqlite3.Connection, owner: str, now: float) -> int:
    cur = db.execute(
        """UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL, attempts = MAX(attempts - 1, 0),
           updated_at = ? WHERE lease_owner = ?""",
        (now, owner),
    )
    return cur.rowcount

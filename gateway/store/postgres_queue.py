"""PostgreSQL store, the delivery queue - the PostgreSQL spelling of sqlite_queue.py, safe with several gateway
processes claiming at once (READ COMMITTED):

- unordered deliveries are claimed with ``FOR UPDATE SKIP LOCKED``: a row another process is claiming is
  passed over, never waited for or taken twice;
- in an ordered lane only its oldest active delivery is a candidate, and it is leased by an ``UPDATE`` whose
  condition (active, lease free or run out) PostgreSQL checks again on the row as committed: of two
  processes after the same lane head one gets it, the other's update matches nothing - so a lane stays one
  at a time across processes;
- finishing re-reads the delivery ``FOR UPDATE``, so a late worker's outcome and an AppRec cannot both count.
"""

from __future__ import annotations

from typing import Any

from gateway.store.base import Claim, DeliveryState
from gateway.store.postgres_rows import Connection, announce, refresh_summary, trace
from gateway.store.records import delivery_record, message_record
from gateway.store.rules import ACTIVE_STATES, may_finish, stamps_sent_at
from gateway.store.trace_words import lease_expired_reason, outcome_detail

__all__ = ["claim", "finish", "reap_leases", "release"]


async def claim(
    conn: Connection,
    owner: str,
    now: float,
    limit: int,
    lease_s: float,
    exclude: list[str],
    route_limits: dict[str, int],
    skip: set[int],
) -> list[Claim]:
    paused = {r["route"] for r in await conn.fetch("SELECT route FROM routes WHERE paused = 1")}
    blocked = set(exclude) | paused | {route for route, room in route_limits.items() if room <= 0}
    # a loose index scan over the lane index: one seek per lane, so a backlog in a few lanes costs a few
    # lookups; the active states are spelled out, as the partial indexes' WHERE (tests/test_store_rules.py)
    heads = await conn.fetch(
        """WITH RECURSIVE lanes(lane) AS (
               (SELECT lane FROM deliveries WHERE state IN ('queued', 'retrying') AND ordered = 1
                ORDER BY lane LIMIT 1)
               UNION ALL
               SELECT (SELECT d.lane FROM deliveries d WHERE d.state IN ('queued', 'retrying') AND d.ordered = 1
                       AND d.lane > lanes.lane ORDER BY d.lane LIMIT 1)
               FROM lanes WHERE lanes.lane IS NOT NULL)
           SELECT head.* FROM lanes CROSS JOIN LATERAL (
               SELECT e.id, e.receiver_her, e.next_attempt_at, e.lease_expires_at FROM deliveries e
               WHERE e.lane = lanes.lane AND e.state IN ('queued', 'retrying') AND e.ordered = 1
               ORDER BY e.id LIMIT 1) head
           WHERE lanes.lane IS NOT NULL"""
    )
    unordered = await conn.fetch(
        """SELECT id, receiver_her, next_attempt_at, lease_expires_at FROM deliveries
           WHERE state IN ('queued', 'retrying') AND ordered = 0 AND next_attempt_at <= $1
             AND (lease_expires_at IS NULL OR lease_expires_at <= $1) AND NOT (receiver_her = ANY($2::text[]))
             AND NOT (id = ANY($3::bigint[]))
           ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED""",
        now,
        sorted(blocked),
        sorted(skip),
        limit,
    )
    candidates = [
        row
        for row in [*heads, *unordered]
        if row["next_attempt_at"] is not None
        and row["next_attempt_at"] <= now
        and (row["lease_expires_at"] is None or row["lease_expires_at"] <= now)
        and row["receiver_her"] not in blocked
        and row["id"] not in skip
    ]
    claims: list[Claim] = []
    taken: dict[str, int] = {}
    expires = now + lease_s
    for row in sorted(candidates, key=lambda r: (r["next_attempt_at"], r["id"])):
        route = row["receiver_her"]
        if route in route_limits and taken.get(route, 0) >= route_limits[route]:
            continue  # the route's share of sends in flight is used up
        # checked again on the row as committed (another process may have claimed, rescheduled or finished it
        # since the candidates were read): still active, due, its lease free, and still its lane's head; a row
        # another claimer holds is passed over, never waited for
        leased = await conn.fetchrow(
            """UPDATE deliveries d SET lease_owner = $1, lease_expires_at = $2, attempts = d.attempts + 1
               FROM (SELECT id, lease_owner, attempts FROM deliveries WHERE id = $3 FOR UPDATE SKIP LOCKED) old
               WHERE d.id = old.id AND d.state = ANY($4::text[]) AND d.next_attempt_at <= $5
                 AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $5)
                 AND (d.ordered = 0 OR NOT EXISTS (
                     SELECT 1 FROM deliveries o WHERE o.lane = d.lane AND o.ordered = 1
                     AND o.state IN ('queued', 'retrying') AND o.id < d.id))
               RETURNING d.*, old.lease_owner AS old_owner, old.attempts AS old_attempts""",
            owner,
            expires,
            row["id"],
            list(ACTIVE_STATES),
            now,
        )
        if leased is None:  # another process took it (or finished it) meanwhile
            continue
        if leased["old_owner"] is not None:
            await _trace_lease_expired(conn, leased, leased["old_owner"], leased["old_attempts"], now)
        taken[route] = taken.get(route, 0) + 1
        row = await conn.fetchrow("SELECT * FROM messages WHERE id = $1", leased["message_id"])
        claims.append(Claim(delivery_record(leased), message_record(row), bytes(row["payload"] or b""), owner, expires))
        if len(claims) >= limit:
            break
    return claims


async def reap_leases(conn: Connection, *, now: float) -> int:
    """Take back leases whose worker is gone, so even a paused route's deliveries show as waiting."""
    rows = await conn.fetch(
        """UPDATE deliveries d SET lease_owner = NULL, lease_expires_at = NULL
           FROM (SELECT id, lease_owner FROM deliveries WHERE lease_owner IS NOT NULL AND lease_expires_at <= $1
                 FOR UPDATE SKIP LOCKED) old
           WHERE d.id = old.id RETURNING d.*, old.lease_owner AS gone_owner""",
        now,
    )
    for row in sorted(rows, key=lambda r: r["id"]):
        await _trace_lease_expired(conn, row, row["gone_owner"], row["attempts"], now)
    if rows:
        await announce(conn)
    return len(rows)


async def _trace_lease_expired(conn: Connection, row: Any, gone_owner: str, attempt: int, now: float) -> None:
    await trace(
        conn,
        row["message_id"],
        now,
        row["state"],
        "delivery.lease_expired",
        lease_expired_reason(gone_owner, attempt),
        delivery_id=row["id"],
        attempt=attempt,
    )


async def finish(
    conn: Connection,
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
    row = await conn.fetchrow("SELECT * FROM deliveries WHERE id = $1 FOR UPDATE", delivery_id)
    if row is None or not may_finish(row["state"], row["lease_owner"], owner):
        return False
    await conn.execute(
        """UPDATE deliveries SET state = $1, lease_owner = NULL, lease_expires_at = NULL, updated_at = $2,
           next_attempt_at = $3, sent_at = COALESCE($4, sent_at),
           last_error_code = COALESCE($5, last_error_code), last_error = COALESCE($6, last_error)
           WHERE id = $7""",
        str(state),
        now,
        next_attempt_at,
        now if stamps_sent_at(state) else None,
        code,
        error,
        delivery_id,
    )
    if state is DeliveryState.DELIVERED:  # an inbound message is delivered once its EHR has it
        await conn.execute(
            "UPDATE messages SET state = 'delivered', updated_at = $1 WHERE id = $2 AND state = 'received'",
            now,
            row["message_id"],
        )
    detail = outcome_detail(code, next_attempt_at)
    await trace(
        conn,
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
    await refresh_summary(conn, row["message_id"], now)
    return True


async def release(conn: Connection, owner: str, now: float) -> int:
    result = await conn.execute(
        """UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL, attempts = GREATEST(attempts - 1, 0),
           updated_at = $1 WHERE lease_owner = $2""",
        now,
        owner,
    )
    released = int(result.split()[-1])
    if released:  # a process stopping gives its work back: another may take it now
        await announce(conn)
    return released

"""``Store`` on PostgreSQL, for several gateway processes on one database (``[store] url = "postgresql://..."``).

The same contract as the SQLite store (tests/store/), the same rules (rules.py) and records (records.py); the
SQL is PostgreSQL's (postgres_rows.py, postgres_queue.py, postgres_receipts.py, postgres_admin.py). The driver
is asyncpg: native asyncio, so the store needs no thread of its own. A pool of connections serves the
process; every state change is one transaction (READ COMMITTED, with the row locks and re-checked updates
the modules describe), committed with the server's ``synchronous_commit`` - on, PostgreSQL's default, and
what "accepted means on disk" rests on: leave it on.

Any database failure (the server away, a lost connection, a serialisation conflict) is a
:class:`~gateway.errors.StoreError` - retryable: a submission gets 503, the worker tries again - and never
carries a password.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from gateway.config import redacted_url
from gateway.errors import GatewayError, StoreError
from gateway.log import get_logger
from gateway.store import postgres_admin as admin
from gateway.store import postgres_queue as queue
from gateway.store import postgres_receipts as receipts
from gateway.store.base import (
    AppRecOutcome,
    Claim,
    DeliveryState,
    MessageRecord,
    MessageView,
    NewDelivery,
    NewMessage,
    Page,
    Refusal,
    RouteState,
)
from gateway.store.postgres_rows import WORK_CHANNEL, Connection, insert_message, take_duplicate, trace
from gateway.store.postgres_schema import migrate
from gateway.store.records import delivery_record, message_fields, message_record, trace_entry

__all__ = ["PostgresStore"]

log = get_logger("gateway.store")

_T = TypeVar("_T")

#: how long opening a connection (or waiting for one of the pool's) and one statement may take: a server gone
#: behind a partition is a StoreError, not a hang
_CONNECT_TIMEOUT_S = 10.0
_STATEMENT_TIMEOUT_S = 60.0
_CLOSE_TIMEOUT_S = 10.0
#: a transaction lost a race another process won: run once more (the second run sees the winner's rows)
_RACES = (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_ATTEMPTS = 2


class PostgresStore:
    """``Store`` on one PostgreSQL database."""

    def __init__(self, dsn: str, *, min_connections: int = 1, max_connections: int = 10) -> None:
        self.dsn = dsn
        self.min_connections = min_connections
        self.max_connections = max_connections
        self._pool: Any = None
        self._listener: Any = None  # the connection that LISTENs for due work (watch)
        #: the schema version found when the store was opened, and the version it has now (postgres_schema.py)
        self.schema = (0, 0)

    def __repr__(self) -> str:
        return f"PostgresStore({redacted_url(self.dsn)!r})"

    # -- lifecycle ----------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_connections,
                max_size=self.max_connections,
                timeout=_CONNECT_TIMEOUT_S,
                command_timeout=_STATEMENT_TIMEOUT_S,
            )
        except (ValueError, OverflowError) as exc:  # a URL the driver cannot read: its words may quote the URL
            raise StoreError(
                f"The store URL {redacted_url(self.dsn)} is not one PostgreSQL takes ({type(exc).__name__})."
            ) from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"The store at {redacted_url(self.dsn)} cannot be reached: {_said(exc)}.") from None
        try:
            async with self._pool.acquire(timeout=_CONNECT_TIMEOUT_S) as conn:
                self.schema = await migrate(conn)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            raise StoreError(f"The store's schema could not be brought up to date: {_said(exc)}.") from None
        except BaseException:
            await self.close()
            raise
        if self.schema[0] != self.schema[1]:
            log.info("store.migrated", store=redacted_url(self.dsn), found=self.schema[0], now=self.schema[1])

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.wait_for(listener.close(), timeout=_CLOSE_TIMEOUT_S)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:  # connections still in use get a moment to come back, then are cut
            await asyncio.wait_for(pool.close(), timeout=_CLOSE_TIMEOUT_S)
        except TimeoutError:
            pool.terminate()

    async def migrate(self) -> tuple[int, int]:
        return self.schema

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _tx(self, *, reading: bool = False, durable: bool = True) -> AsyncIterator[Connection]:
        """One transaction: READ COMMITTED for changes (the row locks and re-checked updates the modules rely
        on, whatever the server's default), one read-only snapshot for a view read in several queries. Not
        ``durable``: the worker's bookkeeping, committed without waiting for the WAL flush (as the SQLite
        store's synchronous=NORMAL: a crash of the database server can take the newest of these - a resend,
        which the receiver's duplicate check absorbs - never a promise)."""
        if self._pool is None:
            raise StoreError("The store is not open.")
        isolation = "repeatable_read" if reading else "read_committed"
        async with self._pool.acquire(timeout=_CONNECT_TIMEOUT_S) as conn, conn.transaction(
            isolation=isolation, readonly=reading
        ):
            if not durable and not reading:
                await conn.execute("SET LOCAL synchronous_commit TO off")
            yield conn

    async def _in_tx(
        self, fn: Callable[..., Awaitable[_T]], *args: Any, reading: bool = False, durable: bool = True, **kwargs: Any
    ) -> _T:
        """Run ``fn(conn, *args, **kwargs)`` in one transaction, once more when it lost a race another process won
        (a unique key taken meanwhile, a deadlock PostgreSQL broke): the second run finds what the first missed.
        Database failures become StoreError."""
        for attempt in range(_ATTEMPTS):
            try:
                async with self._tx(reading=reading, durable=durable) as conn:
                    return await fn(conn, *args, **kwargs)
            except GatewayError:
                raise
            except _RACES as exc:
                if attempt + 1 < _ATTEMPTS:
                    continue
                raise StoreError(f"The store failed: {_said(exc)}.") from exc
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise StoreError(f"The store failed: {_said(exc)}.") from exc
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    # -- taking messages in -------------------------------------------------------------------------

    async def add_message(
        self,
        message: NewMessage,
        deliveries: Sequence[NewDelivery],
        *,
        now: float,
        follow_ups: Sequence[tuple[NewMessage, Sequence[NewDelivery]]] = (),
    ) -> tuple[MessageRecord, bool]:
        return await self._in_tx(_add_message, message, list(deliveries), now, list(follow_ups))

    # -- the delivery queue -------------------------------------------------------------------------

    async def claim_due(
        self,
        *,
        owner: str,
        now: float,
        limit: int,
        lease_s: float,
        exclude_routes: Sequence[str] = (),
        route_limits: Mapping[str, int] | None = None,
        skip: Sequence[int] = (),
    ) -> list[Claim]:
        return await self._in_tx(
            queue.claim,
            owner,
            now,
            limit,
            lease_s,
            list(exclude_routes),
            dict(route_limits or {}),
            set(skip),
            durable=False,
        )

    async def mark_sent(
        self, delivery_id: int, *, owner: str, now: float, reason: str, state: DeliveryState = DeliveryState.SENT
    ) -> bool:
        return await self._in_tx(
            queue.finish, delivery_id, owner, now, state, f"delivery.{state}", reason, None, None, None, durable=False
        )

    async def reschedule(
        self, delivery_id: int, *, owner: str, now: float, next_attempt_at: float, code: str, error: str
    ) -> bool:
        return await self._in_tx(
            queue.finish,
            delivery_id,
            owner,
            now,
            DeliveryState.RETRYING,
            "delivery.retrying",
            error,
            code,
            error,
            next_attempt_at,
            durable=False,
        )

    async def mark_dead(self, delivery_id: int, *, owner: str | None, now: float, code: str, error: str) -> bool:
        return await self._in_tx(
            queue.finish,
            delivery_id,
            owner,
            now,
            DeliveryState.DEAD,
            "delivery.dead",
            error,
            code,
            error,
            None,
            durable=False,
        )

    async def release_leases(self, owner: str, *, now: float) -> int:
        return await self._in_tx(queue.release, owner, now, durable=False)

    async def reap_leases(self, *, now: float) -> int:
        return await self._in_tx(queue.reap_leases, now=now, durable=False)

    # -- looking ------------------------------------------------------------------------------------

    async def get(self, message_id: str) -> MessageView | None:
        return await self._in_tx(_get, message_id, reading=True)

    async def payload(self, message_id: str) -> bytes | None:
        async def read(conn: Connection) -> bytes | None:
            value = await conn.fetchval("SELECT payload FROM messages WHERE id = $1", message_id)
            return None if value is None else bytes(value)

        return await self._in_tx(read)

    async def list_messages(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        direction: str | None = None,
        route: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
        parties: Sequence[str] | None = None,
    ) -> Page:
        return await self._in_tx(_list, state, kind, direction, route, since, limit, cursor, parties, reading=True)

    async def counts(self) -> dict[str, int]:
        async def count(conn: Connection) -> dict[str, int]:
            found = {
                f"messages.{r['state']}": r["n"]
                for r in await conn.fetch("SELECT state, COUNT(*) AS n FROM messages GROUP BY state")
            }
            found |= {
                f"deliveries.{r['state']}": r["n"]
                for r in await conn.fetch("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
            }
            return found

        return await self._in_tx(count, reading=True)

    # -- receipts and the EHR inbox -------------------------------------------------------------------

    async def apply_apprec(
        self,
        message: NewMessage,
        *,
        original_msg_id: str | None,
        original_sender_her_ids: Sequence[str],
        answering_her_ids: Sequence[str],
        outcome: AppRecOutcome | None,
        now: float,
    ) -> tuple[MessageRecord, str | None, bool]:
        return await self._in_tx(
            receipts.apply_apprec,
            message,
            original_msg_id=original_msg_id,
            original_sender_her_ids=list(original_sender_her_ids),
            answering_her_ids=list(answering_her_ids),
            outcome=outcome,
            now=now,
        )

    async def settle_delivery(self, message_id: str, receiver_her: str, outcome: AppRecOutcome, *, now: float) -> bool:
        return await self._in_tx(receipts.settle_delivery, message_id, receiver_her, outcome, now=now)

    async def transport_failed(
        self, message_id: str, receiver_her: str, *, now: float, code: str, error: str, next_attempt_at: float | None
    ) -> bool:
        return await self._in_tx(
            receipts.transport_failed,
            message_id,
            receiver_her,
            now=now,
            code=code,
            error=error,
            next_attempt_at=next_attempt_at,
        )

    async def add_apprec_for(
        self, message_id: str, follow_up: tuple[NewMessage, Sequence[NewDelivery]], *, actor: str, now: float
    ) -> None:
        await self._in_tx(receipts.add_apprec_for, message_id, follow_up, actor=actor, now=now)

    async def inbox(self, receiver_her: str, *, limit: int = 100) -> list[MessageRecord]:
        return await self._in_tx(receipts.inbox, receiver_her, limit, durable=False)

    async def ack_inbox(self, message_id: str, *, actor: str, now: float) -> bool:
        return await self._in_tx(receipts.ack_inbox, message_id, actor=actor, now=now, durable=False)

    async def mark_overdue(self, *, now: float) -> list[tuple[str, int, str]]:
        return await self._in_tx(receipts.mark_overdue, now, durable=False)

    async def mark_receipt_warnings(self, *, now: float) -> list[tuple[str, int, str]]:
        return await self._in_tx(receipts.mark_receipt_warnings, now, durable=False)

    # -- operator control and housekeeping ------------------------------------------------------------

    async def retry(self, message_id: str, *, actor: str, now: float, ttl_s: float | Mapping[str, float]) -> int:
        return await self._in_tx(admin.retry, message_id, actor=actor, now=now, ttl_s=ttl_s)

    async def retry_dead(self, *, route: str | None, actor: str, now: float, ttl_s: float | Mapping[str, float]) -> int:
        return await self._in_tx(admin.retry_dead, route=route, actor=actor, now=now, ttl_s=ttl_s)

    async def cancel(self, message_id: str, *, actor: str, now: float) -> int:
        return await self._in_tx(admin.cancel, message_id, actor=actor, now=now)

    async def pause(self, route: str, *, actor: str, now: float) -> None:
        await self._in_tx(admin.pause, route, actor=actor, now=now)

    async def resume(self, route: str, *, actor: str, now: float) -> None:
        await self._in_tx(admin.resume, route, actor=actor, now=now)

    async def routes(self) -> list[RouteState]:
        return await self._in_tx(admin.route_states, durable=False)

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        return await self._in_tx(admin.queue_counts, durable=False)

    async def prune(self, *, before: float, now: float) -> int:
        return await self._in_tx(admin.prune, before=before, now=now, durable=False)

    async def add_refusal(self, refusal: Refusal, *, keep: int) -> int:
        return await self._in_tx(admin.add_refusal, refusal, keep=keep, durable=False)

    async def refusals(self, *, limit: int = 100, before: int | None = None) -> list[Refusal]:
        return await self._in_tx(admin.refusals, limit, before, durable=False)

    async def watch(self, wake: Callable[[], None]) -> None:
        """LISTEN for due work other processes store (postgres_rows.announce) on a connection of its own. If it
        cannot be had, or is lost later, the worker polls as before; that is logged, not raised."""
        try:
            self._listener = await asyncpg.connect(self.dsn, timeout=_CONNECT_TIMEOUT_S)
            await self._listener.add_listener(WORK_CHANNEL, lambda *_: wake())
            self._listener.add_termination_listener(lambda *_: log.warning("store.watch_lost", code="store.watch_lost"))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("store.watch_failed", code="store.watch_failed", error=_said(exc))

    async def take_turn(self, job: str, turn: int, *, owner: str, now: float) -> bool:
        return await self._in_tx(admin.take_turn, job, turn, owner, now, durable=False)

    async def get_meta(self, key: str) -> str | None:
        return await self._in_tx(admin.get_meta, key, durable=False)

    async def set_meta(self, key: str, value: str | None) -> None:
        await self._in_tx(admin.set_meta, key, value, durable=False)

    async def forget_meta(self, first: str, last: str) -> None:
        await self._in_tx(admin.forget_meta, first, last, durable=False)

    async def maintain(self) -> None:
        """Let PostgreSQL refresh its statistics (autovacuum does the rest)."""

        async def analyse(conn: Connection) -> None:
            await conn.execute("ANALYZE messages, deliveries, trace")

        await self._in_tx(analyse)


async def _add_message(
    conn: Connection,
    m: NewMessage,
    deliveries: list[NewDelivery],
    now: float,
    follow_ups: list[tuple[NewMessage, Sequence[NewDelivery]]],
) -> tuple[MessageRecord, bool]:
    existing = await take_duplicate(conn, m, now)
    if existing is not None:
        return existing, False
    record = await insert_message(conn, m, deliveries, now)
    for follow, follow_deliveries in follow_ups:
        await insert_message(conn, follow, follow_deliveries, now)
        await trace(
            conn,
            m.id,
            now,
            str(record.state),
            "apprec.queued",
            follow.reason,
            actor=follow.client,
            detail={"apprec_message_id": follow.id},
        )
    return record, True


async def _get(conn: Connection, message_id: str) -> MessageView | None:
    row = await conn.fetchrow(f"SELECT {message_fields()} FROM messages m WHERE m.id = $1", message_id)  # noqa: S608
    if row is None:
        return None
    deliveries = await conn.fetch("SELECT * FROM deliveries WHERE message_id = $1 ORDER BY id", message_id)
    lines = await conn.fetch(
        """SELECT t.*, d.receiver_her FROM trace t LEFT JOIN deliveries d ON d.id = t.delivery_id
           WHERE t.message_id = $1 ORDER BY t.id""",
        message_id,
    )
    return MessageView(
        message_record(row), tuple(delivery_record(d) for d in deliveries), tuple(trace_entry(t) for t in lines)
    )


async def _list(
    conn: Connection,
    state: str | None,
    kind: str | None,
    direction: str | None,
    route: str | None,
    since: float | None,
    limit: int,
    cursor: str | None,
    parties: Sequence[str] | None,
) -> Page:
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    for column, value in (("state", state), ("kind", kind), ("direction", direction)):
        if value:
            where.append(f"m.{column} = {arg(value)}")
    if route:
        to = arg(route)
        where.append(f"EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.receiver_her = {to})")  # noqa: S608 - "$n" only
    if parties is not None:
        mine = arg(list(parties))
        where.append(
            f"((m.direction = 'out' AND m.sender_her = ANY({mine}::text[]))"
            f" OR (m.direction = 'in' AND m.receiver_her = ANY({mine}::text[])))"
        )
    if since is not None:
        where.append(f"m.created_at >= {arg(since)}")
    if cursor:
        at, _, last_id = cursor.partition(":")
        when, after = arg(float(at)), arg(last_id)
        where.append(f"(m.created_at < {when} OR (m.created_at = {when} AND m.id < {after}))")
    sql = f"SELECT {message_fields()} FROM messages m"  # noqa: S608 - fixed names
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY m.created_at DESC, m.id DESC LIMIT {arg(limit + 1)}"
    rows = await conn.fetch(sql, *args)
    items = tuple(message_record(r) for r in rows[:limit])
    more = len(rows) > limit
    return Page(items, f"{items[-1].created_at!r}:{items[-1].id}" if more and items else None)


def _said(exc: BaseException) -> str:
    """What went wrong, in the server's or the driver's words, without a password (they never hold one)."""
    return f"{type(exc).__name__}: {exc}".rstrip(": ")[:500]

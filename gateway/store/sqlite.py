"""The embedded default store: one SQLite file in WAL mode, every state change one ``BEGIN IMMEDIATE``
transaction with its trace line.

Durability is chosen per transaction. What the gateway *promises* - a message accepted (the 202), a
packet stored before the transport is acknowledged, an AppRec queued, an operator's action - commits with
``synchronous=FULL``: the WAL is fsynced before the answer goes out, so it survives a power cut. The
worker's bookkeeping (leases, sent / retrying / dead marks, inbox acks, overdue marks) commits with
``synchronous=NORMAL``: it survives a killed process, and what a power cut could take is only the newest
of these - every FULL commit after them fsyncs them too - so the worst case is a resend, which the
receiver's duplicate check absorbs. This halves the fsyncs on the delivery path.

SQLite is driven from one dedicated thread; the async methods hand their work to it, so the event loop
never blocks on disk and the store never sees two writers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import StoreError
from gateway.log import get_logger
from gateway.store import sqlite_admin as admin
from gateway.store import sqlite_queue as queue
from gateway.store import sqlite_receipts as receipts
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
from gateway.store.records import delivery_record, message_fields, message_record, trace_entry
from gateway.store.sqlite_rows import insert_message, take_duplicate, trace
from gateway.store.sqlite_schema import migrate

__all__ = ["SqliteStore"]

log = get_logger("gateway.store")

_T = TypeVar("_T")


class SqliteStore:
    """``Store`` on one SQLite file."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._level = synchronous
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        #: the schema version found when the store was opened, and the version it has now (sqlite_schema.py)
        self.schema = (0, 0)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await self._run(self._open)
        except BaseException:  # a schema from a newer gateway, say: nothing is left open
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def migrate(self) -> tuple[int, int]:
        return self.schema

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        self._level = self._synchronous
        db.execute("PRAGMA foreign_keys=ON")
        try:
            self.schema = migrate(db)
        except BaseException:
            db.close()
            raise
        if self.schema[0] != self.schema[1]:
            log.info("store.migrated", path=str(self.path), found=self.schema[0], now=self.schema[1])
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if self._executor is None:
            raise StoreError("The store is not open.")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        except sqlite3.Error as exc:
            raise StoreError(f"The store failed: {exc}.") from exc

    @contextlib.contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        db = self._db
        if db is None:
            raise StoreError("The store is not open.")
        level = self._synchronous if durable else "NORMAL"
        if level != self._level:
            db.execute(f"PRAGMA synchronous={level}")
            self._level = level
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT must not leave the connection stuck in a transaction
                db.execute("ROLLBACK")
            raise

    # -- taking messages in -------------------------------------------------------------------------

    async def add_message(
        self,
        message: NewMessage,
        deliveries: Sequence[NewDelivery],
        *,
        now: float,
        follow_ups: Sequence[tuple[NewMessage, Sequence[NewDelivery]]] = (),
    ) -> tuple[MessageRecord, bool]:
        return await self._run(self._add_message, message, list(deliveries), now, list(follow_ups))

    def _add_message(
        self,
        m: NewMessage,
        deliveries: list[NewDelivery],
        now: float,
        follow_ups: list[tuple[NewMessage, Sequence[NewDelivery]]],
    ) -> tuple[MessageRecord, bool]:
        with self._tx() as db:
            existing = take_duplicate(db, m, now)
            if existing is not None:
                return existing, False
            record = insert_message(db, m, deliveries, now)
            for follow, follow_deliveries in follow_ups:
                insert_message(db, follow, follow_deliveries, now)
                trace(
                    db,
                    m.id,
                    now,
                    str(record.state),
                    "apprec.queued",
                    follow.reason,
                    actor=follow.client,
                    detail={"apprec_message_id": follow.id},
                )
            return record, True

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
        """The transport took it (``sent``), or - for a delivery to the local EHR - the EHR has it (``delivered``)."""
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

    # -- looking ------------------------------------------------------------------------------------

    async def get(self, message_id: str) -> MessageView | None:
        return await self._run(self._get, message_id)

    def _get(self, message_id: str) -> MessageView | None:
        assert self._db is not None
        db = self._db
        row = db.execute(f"SELECT {message_fields()} FROM messages m WHERE m.id = ?", (message_id,)).fetchone()  # noqa: S608
        if row is None:
            return None
        deliveries = db.execute("SELECT * FROM deliveries WHERE message_id = ? ORDER BY id", (message_id,)).fetchall()
        lines = db.execute(
            """SELECT t.*, d.receiver_her FROM trace t LEFT JOIN deliveries d ON d.id = t.delivery_id
               WHERE t.message_id = ? ORDER BY t.id""",
            (message_id,),
        ).fetchall()
        return MessageView(
            message_record(row), tuple(delivery_record(d) for d in deliveries), tuple(trace_entry(t) for t in lines)
        )

    async def payload(self, message_id: str) -> bytes | None:
        def read() -> bytes | None:
            assert self._db is not None
            row = self._db.execute("SELECT payload FROM messages WHERE id = ?", (message_id,)).fetchone()
            return None if row is None or row[0] is None else bytes(row[0])

        return await self._run(read)

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
        return await self._run(self._list, state, kind, direction, route, since, limit, cursor, parties)

    def _list(
        self,
        state: str | None,
        kind: str | None,
        direction: str | None,
        route: str | None,
        since: float | None,
        limit: int,
        cursor: str | None,
        parties: Sequence[str] | None,
    ) -> Page:
        assert self._db is not None
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("state", state), ("kind", kind), ("direction", direction)):
            if value:
                where.append(f"m.{column} = ?")
                args.append(value)
        if route:
            where.append("EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.receiver_her = ?)")
            args.append(route)
        if parties is not None:
            marks = ",".join("?" * len(parties)) or "NULL"
            where.append(
                f"((m.direction = 'out' AND m.sender_her IN ({marks}))"
                f" OR (m.direction = 'in' AND m.receiver_her IN ({marks})))"
            )
            args.extend([*parties, *parties])
        if since is not None:
            where.append("m.created_at >= ?")
            args.append(since)
        if cursor:
            at, _, last_id = cursor.partition(":")
            where.append("(m.created_at < ? OR (m.created_at = ? AND m.id < ?))")
            args.extend([float(at), float(at), last_id])
        sql = f"SELECT {message_fields()} FROM messages m"  # noqa: S608 - fixed names
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY m.created_at DESC, m.id DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, limit + 1)).fetchall()
        items = tuple(message_record(r) for r in rows[:limit])
        more = len(rows) > limit
        return Page(items, f"{items[-1].created_at!r}:{items[-1].id}" if more and items else None)

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

    async def reap_leases(self, *, now: float) -> int:
        return await self._in_tx(queue.reap_leases, now=now, durable=False)

    async def add_refusal(self, refusal: Refusal, *, keep: int) -> int:
        return await self._in_tx(admin.add_refusal, refusal, keep=keep, durable=False)

    async def refusals(self, *, limit: int = 100, before: int | None = None) -> list[Refusal]:
        return await self._in_tx(admin.refusals, limit, before, durable=False)

    async def watch(self, wake: Callable[[], None]) -> None:
        """Nothing to watch: this process is the store's only writer, and tells its worker itself."""

    async def take_turn(self, job: str, turn: int, *, owner: str, now: float) -> bool:
        return await self._in_tx(admin.take_turn, job, turn, owner, now, durable=False)

    async def get_meta(self, key: str) -> str | None:
        return await self._in_tx(admin.get_meta, key, durable=False)

    async def set_meta(self, key: str, value: str | None) -> None:
        await self._in_tx(admin.set_meta, key, value, durable=False)

    async def forget_meta(self, first: str, last: str) -> None:
        await self._in_tx(admin.forget_meta, first, last, durable=False)

    async def maintain(self) -> None:
        """Let SQLite refresh its statistics and fold the WAL back into the database file."""

        def run() -> None:
            assert self._db is not None
            self._db.execute("PRAGMA optimize")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        await self._run(run)

    async def _in_tx(self, fn: Callable[..., _T], *args: Any, durable: bool = True, **kwargs: Any) -> _T:
        """Run ``fn(db, *args, **kwargs)`` in one transaction on the store thread."""

        def run() -> _T:
            with self._tx(durable=durable) as db:
                return fn(db, *args, **kwargs)

        return await self._run(run)

    async def counts(self) -> dict[str, int]:
        def count() -> dict[str, int]:
            assert self._db is not None
            found = {
                f"messages.{r[0]}": r[1]
                for r in self._db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state")
            }
            found |= {
                f"deliveries.{r[0]}": r[1]
                for r in self._db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state")
            }
            return found

        return await self._run(count)

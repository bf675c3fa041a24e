"""Moving a region's data from its SQLite store into PostgreSQL (``gateway migrate-store``), with every gateway
process stopped: messages, deliveries, the trace, routes, the adapters' meta values (dedupe keys are the
messages' own column; inbox and offsets are deliveries and meta) and refused packets - every row, ids kept,
so the trace still points at its deliveries and the sequences go on after the highest id.

The SQLite file is brought to the current schema first (as opening it would); the PostgreSQL database must be
empty of messages (a second run into the same database is refused, never doubles anything). The rows go
over in one PostgreSQL transaction with ``COPY``, table by table, in batches; at the end the row counts of both
sides are compared, and any difference rolls the whole move back.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from gateway.config import redacted_url
from gateway.errors import ConfigError, StoreError
from gateway.store.postgres_schema import migrate as migrate_postgres
from gateway.store.sqlite_schema import migrate as migrate_sqlite

__all__ = ["TABLES", "transfer"]

#: in an order that keeps references intact (a delivery after its message)
TABLES = ("messages", "deliveries", "trace", "routes", "meta", "refusals")
#: the tables whose ids come from a sequence in PostgreSQL
_SEQUENCED = ("deliveries", "trace", "refusals")
_BATCH = 1000


def transfer(source: Path, target_dsn: str) -> dict[str, int]:
    """Copy every row of the SQLite store at ``source`` into the (empty) PostgreSQL store at ``target_dsn``;
    the rows moved per table. Raises ConfigError for a missing source or a target that holds messages,
    StoreError when the counts do not agree (nothing is kept then). A tool's call: it runs its own event loop."""
    if not source.is_file():
        raise ConfigError(f"No SQLite store at {source}.")
    db = sqlite3.connect(source)
    try:
        migrate_sqlite(db)
        return asyncio.run(_into_postgres(db, target_dsn))
    finally:
        db.close()


async def _into_postgres(db: sqlite3.Connection, target_dsn: str) -> dict[str, int]:
    try:
        conn = await asyncpg.connect(target_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        where = redacted_url(target_dsn)
        raise StoreError(f"The store at {where} cannot be reached: {type(exc).__name__}.") from None
    try:
        await migrate_postgres(conn)
        return await _copy(db, conn, target_dsn)
    finally:
        await conn.close()


async def _copy(db: sqlite3.Connection, conn: Any, target_dsn: str) -> dict[str, int]:
    moved: dict[str, int] = {}
    async with conn.transaction():
        held = await conn.fetchval("SELECT count(*) FROM messages")
        if held:
            raise ConfigError(
                f"The store at {redacted_url(target_dsn)} already holds {held} messages; move into an empty database."
            )
        for table in TABLES:
            columns, floats = await _shared_columns(db, conn, table)
            for rows in _batches(db, table, columns, floats):
                await conn.copy_records_to_table(table, records=rows, columns=columns)
            moved[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed names
            expected = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            if moved[table] != expected:
                raise StoreError(f"{table}: {expected} rows in SQLite, {moved[table]} in PostgreSQL; nothing is kept.")
        for table in _SEQUENCED:
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(max(id), 0) + 1, false) FROM {table}"  # noqa: S608
            )
    return moved


async def _shared_columns(db: sqlite3.Connection, conn: Any, table: str) -> tuple[list[str], set[int]]:
    """The columns both sides have (a first-wave SQLite table may carry one the schema dropped since), and the
    positions of those that are double precision in PostgreSQL (SQLite may hold a whole number there)."""
    types = {
        r["column_name"]: r["data_type"]
        for r in await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1", table
        )
    }
    columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})") if row[1] in types]
    return columns, {i for i, name in enumerate(columns) if types[name] == "double precision"}


def _batches(
    db: sqlite3.Connection, table: str, columns: list[str], floats: set[int]
) -> Iterator[list[tuple[Any, ...]]]:
    cursor = db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid")  # noqa: S608 - checked names
    while rows := cursor.fetchmany(_BATCH):
        yield [
            tuple(float(v) if i in floats and v is not None else v for i, v in enumerate(row)) for row in rows
        ]

"""The throwaway PostgreSQL the store tests will run against, and the primitives several gateway processes
will share work with (issue 12): durable commits, rows claimed by one transaction and skipped by another
(``FOR UPDATE SKIP LOCKED``), and ``LISTEN/NOTIFY`` to wake an idle worker."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncpg

from gateway.testing.postgres import PostgresServer


async def test_it_commits_durably_and_listens_on_loopback_only(postgres: PostgresServer) -> None:
    connection = await asyncpg.connect(postgres.dsn)
    try:
        assert await connection.fetchval("SHOW synchronous_commit") == "on"
        assert await connection.fetchval("SHOW fsync") == "on"
        assert await connection.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert (await connection.fetchval("SELECT version()")).startswith("PostgreSQL ")
    finally:
        await connection.close()


async def test_a_row_one_transaction_claims_is_skipped_by_another(postgres: PostgresServer) -> None:
    setup = await asyncpg.connect(postgres.dsn)
    first, second = await asyncpg.connect(postgres.dsn), await asyncpg.connect(postgres.dsn)
    claim = "SELECT id FROM work ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED"
    try:
        await setup.execute("DROP TABLE IF EXISTS work; CREATE TABLE work (id serial PRIMARY KEY, due boolean)")
        await setup.execute("INSERT INTO work (due) SELECT true FROM generate_series(1, 4)")
        async with first.transaction(), second.transaction():
            mine = [r["id"] for r in await first.fetch(claim)]
            theirs = [r["id"] for r in await second.fetch(claim)]
        assert mine == [1, 2] and theirs == [3, 4]  # each row to one claimer, none waited
    finally:
        for connection in (setup, first, second):
            await connection.close()


async def test_a_notification_wakes_a_listener(postgres: PostgresServer) -> None:
    listener, sender = await asyncpg.connect(postgres.dsn), await asyncpg.connect(postgres.dsn)
    woken: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener("work_due", lambda _c, _pid, _channel, payload: woken.put_nowait(payload))
        await sender.execute("SELECT pg_notify('work_due', '7200101')")
        assert await asyncio.wait_for(woken.get(), timeout=60) == "7200101"  # a bound for a stuck run only
    finally:
        await listener.close()
        await sender.close()


def test_a_stopped_server_is_gone(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "pg")
    server.start()
    root, port = server.root, server.port
    server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there any more
    assert server.root == tmp_path / "pg" or not root.exists()  # a directory made for root is removed

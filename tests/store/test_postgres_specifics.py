"""What only the PostgreSQL store has to get right: an ordered lane's deliveries become visible in their order
when several processes accept into it at once, a race another process won is run once more instead of
failing, every transaction that changes rows is READ COMMITTED whatever the server's default, and every
failure - a schema it cannot bring up to date, a server it cannot reach - is a StoreError without a password."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

from gateway.config import redacted_url
from gateway.errors import StoreError
from gateway.store.base import AppRecOutcome, Direction, MessageState
from gateway.store.postgres import PostgresStore
from gateway.store.postgres_rows import insert_message
from gateway.testing.postgres import PostgresServer

from .conftest import new_database
from .test_contract import NOW, message, to


async def _waiting_on_a_lane(dsn: str) -> bool:
    probe = await asyncpg.connect(dsn)
    try:
        return bool(await probe.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
    finally:
        await probe.close()


async def test_a_lane_takes_one_new_delivery_at_a_time(postgres: PostgresServer) -> None:
    """Process A accepts into a lane and has not committed; process B accepts into the same lane. B waits for A
    (it would otherwise commit a later id first, and a claim would send it ahead of A's): nothing of the lane
    is due until A commits, and then A's goes first."""
    dsn = await new_database(postgres)
    async with PostgresStore(dsn) as store:  # (the schema)
        a = await asyncpg.connect(dsn)
        b = await asyncpg.connect(dsn)
        try:
            first = a.transaction()
            await first.start()
            await insert_message(a, message("first"), [to()], NOW)

            async def second() -> None:
                async with b.transaction():
                    await insert_message(b, message("second"), [to()], NOW)

            behind = asyncio.create_task(second())
            for _ in range(600):  # a bound for a stuck run; B is seen waiting on the lane, not timed
                if await _waiting_on_a_lane(dsn):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the second accept never waited for the lane")
            assert await store.claim_due(owner="w", now=NOW, limit=10, lease_s=30) == []
            await first.commit()
            await behind
            [claim] = await store.claim_due(owner="w", now=NOW, limit=10, lease_s=30)
            assert claim.message.msg_id == "first"
        finally:
            await a.close()
            await b.close()


async def test_the_same_apprec_taken_by_two_processes_at_once_is_stored_once(postgres: PostgresServer) -> None:
    dsn = await new_database(postgres)
    apprec = dataclasses.replace(
        message("apprec-x", sender="7200101"),
        direction=Direction.IN,
        receiver_her="7100101",
        state=MessageState.RECEIVED,
        dedupe_key="in|7200101|apprec-x|7100101",
    )
    async with PostgresStore(dsn) as one, PostgresStore(dsn) as two:
        results = await asyncio.gather(
            *(
                store.apply_apprec(
                    apprec,
                    original_msg_id="nothing",
                    original_sender_her_ids=["7100101"],
                    answering_her_ids=["7200101"],
                    outcome=AppRecOutcome("1", (), "", NOW),
                    now=NOW,
                )
                for store in (one, two, one, two)
            )
        )
    assert sum(created for _, _, created in results) == 1 and len({r.id for r, _, _ in results}) == 1


async def test_changes_are_read_committed_and_promises_flushed_whatever_the_servers_default(
    postgres: PostgresServer,
) -> None:
    dsn = await new_database(postgres)
    admin = await asyncpg.connect(dsn)
    try:
        name = dsn.rsplit("/", 1)[1]
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_isolation = \'serializable\'')
    finally:
        await admin.close()
    async with PostgresStore(dsn) as store:
        async with store._tx() as conn:
            assert await conn.fetchval("SHOW transaction_isolation") == "read committed"
            assert await conn.fetchval("SHOW synchronous_commit") == "on"  # a promise: flushed before the answer
        async with store._tx(durable=False) as conn:  # the worker's bookkeeping, as SQLite's synchronous=NORMAL
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
        async with store._tx(reading=True) as conn:
            assert await conn.fetchval("SHOW transaction_isolation") == "repeatable read"
        record, _ = await store.add_message(message(), [to()], now=NOW)  # and the work goes on
        assert await store.get(record.id) is not None


async def test_a_schema_it_cannot_bring_up_to_date_is_a_store_error(postgres: PostgresServer) -> None:
    dsn = await new_database(postgres)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("CREATE TABLE messages (id integer PRIMARY KEY)")  # someone else's table
    finally:
        await admin.close()
    with pytest.raises(StoreError, match="could not be brought up to date"):
        await PostgresStore(dsn).open()


async def test_no_password_in_a_failure(postgres: PostgresServer) -> None:
    dsn = f"postgresql://gateway@127.0.0.1:{postgres.port}/no_such_database?password=s3cret"
    with pytest.raises(StoreError) as caught:
        await PostgresStore(dsn).open()
    assert "s3cret" not in caught.value.message and "password=***" in caught.value.message
    assert redacted_url("postgresql://u:pw@h/db?sslmode=require&password=x") == (
        "postgresql://u:***@h/db?sslmode=require&password=***"
    )


async def test_work_another_process_stores_wakes_this_ones_worker(postgres: PostgresServer) -> None:
    """An idle worker need not wait for its next poll: what another process stores and is due wakes it."""
    dsn = await new_database(postgres)
    woken = asyncio.Event()
    async with PostgresStore(dsn) as mine, PostgresStore(dsn) as theirs:
        await mine.watch(woken.set)
        record, _ = await theirs.add_message(message("from-another-process"), [to()], now=NOW)
        await asyncio.wait_for(woken.wait(), timeout=60)  # a bound for a stuck run only
        woken.clear()
        [claim] = await theirs.claim_due(owner="theirs", now=NOW, limit=1, lease_s=30)
        await theirs.release_leases("theirs", now=NOW)  # a process stopping gives its work back
        await asyncio.wait_for(woken.wait(), timeout=60)
        [mine_now] = await mine.claim_due(owner="mine", now=NOW, limit=1, lease_s=30)
        assert mine_now.delivery.id == claim.delivery.id and mine_now.message.id == record.id

"""The stores under the delivery worker's load: deliveries claimed and marked sent per second by 1, 2 and 3
worker processes on one PostgreSQL, and by one on SQLite, the same messages in the same run; and what one
claim costs with a backlog of a million deliveries.

    .venv/bin/python bench/store.py [--messages 6000] [--backlog 1000000]

The PostgreSQL server is a throwaway one started here on loopback (gateway/testing/postgres.py: Debian's, with
its defaults - fsync and synchronous_commit on); SQLite is a file under the temporary directory with the
gateway's settings (WAL, synchronous FULL for accepts, NORMAL for the worker's bookkeeping).

1. throughput: n outbound messages accepted (one delivery each, 13 ordered lanes to one receiver and
   unordered ones to another, as the region's traffic), then k worker processes - each its own store, as k
   gateway processes - claim 8 at a time and mark each sent until none is left; timed from the first claim to
   the last mark. Every delivery must be sent exactly once: checked at the end.
2. claim cost: a backlog of N due deliveries (copied in, not accepted one by one) in 13 ordered lanes and
   one unordered route; the median and p99 of 50 claims of 8 (each released again, so the backlog stays).

The store work only: no HTTP, no CMS, no transports (bench/accept_and_deliver.py measures the gateway whole).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from gateway.log import configure  # noqa: E402
from gateway.store.base import Direction, MessageState, NewDelivery, NewMessage, Store  # noqa: E402
from gateway.store.postgres import PostgresStore  # noqa: E402
from gateway.store.sqlite import SqliteStore  # noqa: E402
from gateway.testing.postgres import PostgresServer  # noqa: E402

NOW = 1_800_000_000.0
LANES = 13


def _message(i: int) -> tuple[NewMessage, list[NewDelivery]]:
    sender = f"71{i % LANES + 1:02}101"
    msg_id = str(uuid.uuid4())
    ordered = i % 2 == 0
    message = NewMessage(
        id=uuid.uuid4().hex,
        direction=Direction.OUT,
        kind="plo-innleggelsesrapport-1.6",
        msg_type="INNLEGGELSESRAPPORT",
        msg_id=msg_id,
        sender_her=sender,
        receiver_her="7200101",
        state=MessageState.ACCEPTED,
        payload=b"<MsgHead>" + b"x" * 4000 + b"</MsgHead>",
        client="bench",
        dedupe_key=f"out|{sender}|{msg_id}",
    )
    receiver = "7200101" if ordered else "7300101"
    return message, [NewDelivery(receiver, "PRIM", "http", ordered=ordered)]


def _store(kind: str, where: str) -> Store:
    return SqliteStore(Path(where)) if kind == "sqlite" else PostgresStore(where)


async def _fill(kind: str, where: str, n: int) -> None:
    async with _store(kind, where) as store:
        for i in range(n):
            message, deliveries = _message(i)
            await store.add_message(message, deliveries, now=NOW)


async def _work(kind: str, where: str, owner: str) -> int:
    done = 0
    async with _store(kind, where) as store:
        idle = 0
        while idle < 3:
            claims = await store.claim_due(owner=owner, now=NOW + 1, limit=8, lease_s=600, route_limits={})
            if not claims:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for claim in claims:
                await store.mark_sent(claim.delivery.id, owner=owner, now=NOW + 2, reason="sent")
                done += 1
    return done


def _worker(kind: str, where: str, owner: str, start: Any, out: Any) -> None:
    """One worker process (a multiprocessing Event and Queue from the spawn context)."""
    configure(fmt="console", level="warning", stream=sys.stderr)
    start.wait()
    out.put(asyncio.run(_work(kind, where, owner)))


async def _sent_once(kind: str, where: str, n: int) -> None:
    async with _store(kind, where) as store:
        counts = await store.counts()
    assert counts.get("deliveries.sent") == n and not counts.get("deliveries.queued"), counts


def throughput(kind: str, where: str, n: int, processes: int) -> float:
    asyncio.run(_fill(kind, where, n))
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(kind, where, f"p{i}", start, out)) for i in range(processes)]
    for w in workers:
        w.start()
    time.sleep(2.0)  # the processes are up and have imported; the clock starts with the first claim
    began = time.perf_counter()
    start.set()
    total = sum(out.get() for _ in workers)
    elapsed = time.perf_counter() - began
    for w in workers:
        w.join()
    assert total == n, (total, n)
    asyncio.run(_sent_once(kind, where, n))
    return n / elapsed


async def _backlog_postgres(dsn: str, n: int) -> None:
    async with PostgresStore(dsn):
        pass  # the schema
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "messages",
            columns=["id", "direction", "state", "client", "payload", "payload_sha256", "size", "created_at",
                     "updated_at"],
            records=((f"m{i}", "out", "queued", "bench", b"<m/>", "0" * 64, 4, NOW, NOW) for i in range(n)),
        )
        await conn.copy_records_to_table(
            "deliveries",
            columns=["message_id", "receiver_her", "role", "channel", "lane", "ordered", "state", "next_attempt_at",
                     "created_at", "updated_at"],
            records=(
                (f"m{i}", "7200101" if i % 2 else "7300101", "PRIM", "http", f"out:71{i % LANES:02}101>7200101",
                 i % 2, "queued", NOW, NOW, NOW)
                for i in range(n)
            ),
        )  # fmt: skip
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def _backlog_sqlite(path: str, n: int) -> None:
    import sqlite3

    asyncio.run(_fill("sqlite", path, 0))
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO messages (id, direction, state, client, payload, payload_sha256, size, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            ((f"m{i}", "out", "queued", "bench", b"<m/>", "0" * 64, 4, NOW, NOW) for i in range(n)),
        )
        db.executemany(
            "INSERT INTO deliveries (message_id, receiver_her, role, channel, lane, ordered, state, next_attempt_at,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            ((f"m{i}", "7200101" if i % 2 else "7300101", "PRIM", "http", f"out:71{i % LANES:02}101>7200101",
              i % 2, "queued", NOW, NOW, NOW) for i in range(n)),
        )  # fmt: skip
    db.execute("ANALYZE")
    db.close()


async def _claim_cost(kind: str, where: str) -> tuple[float, float]:
    took = []
    async with _store(kind, where) as store:
        for _ in range(50):
            began = time.perf_counter()
            claims = await store.claim_due(owner="bench", now=NOW + 1, limit=8, lease_s=600)
            took.append(time.perf_counter() - began)
            assert claims
            await store.release_leases("bench", now=NOW + 1)
    took.sort()
    return statistics.median(took) * 1000, took[int(len(took) * 0.99) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    args = parser.parse_args()
    configure(fmt="console", level="warning", stream=sys.stderr)
    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    with tempfile.TemporaryDirectory() as tmp, PostgresServer(Path(tmp) / "pg") as server:
        rate = throughput("sqlite", str(Path(tmp) / "one.sqlite"), args.messages, 1)
        print(f"sqlite, 1 process: {rate:,.0f} deliveries/s (claimed and marked sent)")
        for processes in (1, 2, 3):
            dsn = asyncio.run(server.create_database("bench"))
            rate = throughput("postgres", dsn, args.messages, processes)
            print(f"postgresql, {processes} process{'es' if processes > 1 else ''}: {rate:,.0f} deliveries/s")
        if args.backlog:
            dsn = asyncio.run(server.create_database("bench"))
            asyncio.run(_backlog_postgres(dsn, args.backlog))
            p50, p99 = asyncio.run(_claim_cost("postgres", dsn))
            print(f"postgresql, claim of 8 with a backlog of {args.backlog:,}: median {p50:.1f} ms, p99 {p99:.1f} ms")
            path = str(Path(tmp) / "backlog.sqlite")
            _backlog_sqlite(path, args.backlog)
            p50, p99 = asyncio.run(_claim_cost("sqlite", path))
            print(f"sqlite, claim of 8 with a backlog of {args.backlog:,}: median {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()

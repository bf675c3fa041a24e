"""The store contract, looking and keeping (every store, tests/store/conftest.py): the message list with its
filters and cursor, the counts operators and /healthz read, routes, refused packets in pages, and the
adapters' meta values with their range delete."""

from __future__ import annotations

import dataclasses

from gateway.store.base import Direction, Refusal, Store

from .test_contract import NOW, message, to


async def test_the_list_filters_and_pages_newest_first(store: Store) -> None:
    ids = []
    for i in range(5):
        record, _ = await store.add_message(message(f"m{i}", sender=f"71{i:02}101"), [to()], now=NOW + i)
        ids.append(record.id)
    first = await store.list_messages(limit=2)
    assert [m.id for m in first.items] == [ids[4], ids[3]] and first.next_cursor
    second = await store.list_messages(limit=2, cursor=first.next_cursor)
    third = await store.list_messages(limit=2, cursor=second.next_cursor)
    assert [m.id for m in second.items + third.items] == [ids[2], ids[1], ids[0]] and third.next_cursor is None
    assert [m.id for m in (await store.list_messages(parties=["7101101"])).items] == [ids[1]]
    assert [m.id for m in (await store.list_messages(parties=[])).items] == []
    assert len((await store.list_messages(route="7200101", since=NOW + 3)).items) == 2
    assert (await store.list_messages(state="queued", kind="dialogmelding-1.1", direction="out")).items
    assert not (await store.list_messages(direction=str(Direction.IN))).items


async def test_counts_routes_and_queue_counts(store: Store) -> None:
    await store.add_message(message("a"), [to()], now=NOW)
    await store.add_message(message("b"), [to("7300101", ordered=False)], now=NOW)
    await store.pause("7400101", actor="ops", now=NOW)
    counts = await store.counts()
    assert counts["messages.queued"] == 2 and counts["deliveries.queued"] == 2
    assert [(r.route, r.paused, r.paused_by) for r in await store.routes()] == [
        ("7200101", False, None),
        ("7300101", False, None),
        ("7400101", True, "ops"),
    ]
    assert await store.queue_counts() == {"7200101": {"queued": 1}, "7300101": {"queued": 1}}


async def test_refusals_come_in_pages_and_only_the_newest_are_kept(store: Store) -> None:
    base = Refusal(NOW, "http", "security.unverified_packet", None, None, None, None, None, 1, "0" * 64, "r")
    ids = [await store.add_refusal(dataclasses.replace(base, reason=f"r{i}"), keep=3) for i in range(5)]
    kept = await store.refusals(limit=10)
    assert [r.id for r in kept] == ids[:1:-1] and [r.reason for r in kept] == ["r4", "r3", "r2"]
    assert [r.id for r in await store.refusals(limit=10, before=ids[4])] == [ids[3], ids[2]]


async def test_meta_values_and_their_range_delete(store: Store) -> None:
    for key in ("adapter:amqp:sent@2026-11-20:a", "adapter:amqp:sent@2026-11-27:b", "adapter:edi2:offset"):
        await store.set_meta(key, "v")
    await store.set_meta("adapter:edi2:offset", "42")
    assert await store.get_meta("adapter:edi2:offset") == "42"
    await store.forget_meta("adapter:amqp:sent@", "adapter:amqp:sent@2026-11-21")
    assert await store.get_meta("adapter:amqp:sent@2026-11-20:a") is None
    assert await store.get_meta("adapter:amqp:sent@2026-11-27:b") == "v"
    await store.set_meta("adapter:edi2:offset", None)
    assert await store.get_meta("adapter:edi2:offset") is None


async def test_a_jobs_turn_is_taken_once(store: Store) -> None:
    assert await store.take_turn("prune", 100, owner="host-a:1", now=NOW)
    assert not await store.take_turn("prune", 100, owner="host-b:2", now=NOW + 1)  # the period is taken
    assert not await store.take_turn("prune", 100, owner="host-a:1", now=NOW + 2)
    assert not await store.take_turn("prune", 99, owner="host-b:2", now=NOW + 3)  # a late process's old period
    assert await store.take_turn("receipts", 100, owner="host-b:2", now=NOW + 4)  # another job
    assert await store.take_turn("prune", 101, owner="host-b:2", now=NOW + 5)

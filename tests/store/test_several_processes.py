"""Several stores on one database at once - as several gateway processes share one PostgreSQL (and, slower, one
SQLite file): every delivery is sent by one of them, once, an ordered lane never has two in flight and goes in
acceptance order through retries, the same message accepted by two at once is stored once, and a message's
summary sees every delivery's outcome."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable

from gateway.clock import ManualClock
from gateway.scheduler import once_per_turn
from gateway.store.base import DeliveryState, MessageState, NewDelivery, Store

from .conftest import StoreMaker
from .test_contract import NOW, message, to

LANES, PER_LANE, UNORDERED = 6, 5, 30


async def test_each_delivery_goes_to_one_claimer_and_a_lane_stays_one_at_a_time(make_store: StoreMaker) -> None:
    async with make_store() as first:
        for lane in range(LANES):
            for i in range(PER_LANE):
                await first.add_message(message(f"l{lane}-{i}", sender=f"71{lane:02}101"), [to()], now=NOW + i)
        for i in range(UNORDERED):
            await first.add_message(message(f"u{i}", sender="7199101"), [to("7300101", ordered=False)], now=NOW)
    stores = [make_store() for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        for store in stores:
            await stack.enter_async_context(store)
        sent: Counter[int] = Counter()
        order: dict[str, list[int]] = {}  # lane -> delivery ids in the order their last attempts were claimed
        in_flight: dict[str, int] = {}  # lane -> delivery id, while leased
        tried: set[int] = set()

        async def work(store: Store, owner: str) -> None:
            idle = 0
            while idle < 3:
                claims = await store.claim_due(owner=owner, now=NOW + 100, limit=4, lease_s=600)
                if not claims:
                    idle += 1
                    await asyncio.sleep(0.01)
                    continue
                idle = 0
                for claim in claims:  # (no await here: what the claim returned, in the order it returned it)
                    lane = claim.delivery.lane
                    if claim.delivery.receiver_her == "7200101":  # ordered
                        assert lane not in in_flight, f"two of lane {lane} in flight"
                        in_flight[lane] = claim.delivery.id
                    if claim.delivery.id in tried:  # its last attempt: the lane's next can only follow it
                        order.setdefault(lane, []).append(claim.delivery.id)
                for claim in claims:
                    await asyncio.sleep(0)  # let the others claim meanwhile
                    d = claim.delivery
                    # free in the test's eyes from here: in the store it stays leased until the call below commits,
                    # so a claimer that gets its lane meanwhile would be a real double
                    in_flight.pop(d.lane, None)
                    if d.id not in tried:  # every first attempt fails, and is due again at once
                        tried.add(d.id)
                        assert await store.reschedule(
                            d.id, owner=owner, now=NOW + 100, next_attempt_at=NOW + 100, code="x", error="try again"
                        )
                    else:
                        assert await store.mark_sent(d.id, owner=owner, now=NOW + 101, reason="sent")
                        sent[d.id] += 1

        await asyncio.gather(*(work(store, f"process-{i}") for i, store in enumerate(stores)))
    ordered = [ids for lane, ids in order.items() if ">7200101" in lane]
    assert len(ordered) == LANES and all(ids == sorted(ids) for ids in ordered)  # each lane in acceptance order
    assert len(sent) == LANES * PER_LANE + UNORDERED and set(sent.values()) == {1}


async def test_the_same_message_accepted_by_two_at_once_is_stored_once(make_store: StoreMaker) -> None:
    async with make_store() as one, make_store() as two:
        results = await asyncio.gather(
            *(store.add_message(message("same"), [to()], now=NOW) for store in (one, two, one, two))
        )
    created = [record.id for record, fresh in results if fresh]
    assert len(created) == 1 and {record.id for record, _ in results} == set(created)


async def test_a_summary_sees_every_deliverys_outcome(make_store: StoreMaker) -> None:
    """Two processes settle the two deliveries of one message at the same moment: the message reads
    acknowledged only with both, never from a view that missed the other's change."""
    receivers = [f"72{i:02}101" for i in range(8)]
    async with make_store() as setup:
        record, _ = await setup.add_message(
            message("copies"), [NewDelivery(her, "COP", "memory", ordered=False) for her in receivers], now=NOW
        )
        claims = await setup.claim_due(owner="w", now=NOW, limit=20, lease_s=600)
    async with make_store() as one, make_store() as two:
        await asyncio.gather(
            *(
                (one if i % 2 else two).mark_sent(
                    c.delivery.id, owner="w", now=NOW + 1, reason="taken", state=DeliveryState.ACKNOWLEDGED
                )
                for i, c in enumerate(claims)
            )
        )
        view = await one.get(record.id)
    assert view is not None and {d.state for d in view.deliveries} == {DeliveryState.ACKNOWLEDGED}
    assert view.message.state == MessageState.ACKNOWLEDGED


async def test_a_housekeeping_job_runs_once_a_period_across_the_processes(make_store: StoreMaker) -> None:
    clock = ManualClock(NOW)
    runs: list[str] = []

    def job(process: str) -> Callable[[], Awaitable[object]]:
        async def run() -> None:
            runs.append(process)

        return run

    async with make_store() as one, make_store() as two:
        jobs = [
            once_per_turn("prune", job(name), every_s=3600, store=store, clock=clock, owner=name)
            for name, store in (("process-1", one), ("process-2", two), ("process-3", one))
        ]
        await asyncio.gather(*(run() for run in jobs))  # all three in the same hour
        assert len(runs) == 1
        clock.advance(3600)
        for run in reversed(jobs):
            await run()
        assert len(runs) == 2 and runs[1] == "process-3"  # the first to ask takes the next hour

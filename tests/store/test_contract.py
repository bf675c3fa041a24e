"""The store contract, run against every store (tests/store/conftest.py: SQLite on a real file, PostgreSQL on a
real server): durable accept, dedupe, leases that expire, ordered lanes, fencing, receipts, the inbox,
operator control, retention, refused packets and the adapters' meta values."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Awaitable

import pytest

from gateway.errors import Conflict
from gateway.store.base import (
    AppRecOutcome,
    DeliveryState,
    Direction,
    MessageState,
    NewDelivery,
    NewMessage,
    Refusal,
    Store,
)

from .conftest import StoreMaker

NOW = 1_800_000_000.0


def message(msg_id: str | None = None, *, sender: str = "7100101", payload: bytes = b"<m/>") -> NewMessage:
    msg_id = msg_id or str(uuid.uuid4())
    return NewMessage(
        id=uuid.uuid4().hex,
        direction=Direction.OUT,
        kind="dialogmelding-1.1",
        msg_type="DIALOG_HELSEFAGLIG",
        msg_id=msg_id,
        sender_her=sender,
        receiver_her="7200101",
        state=MessageState.ACCEPTED,
        payload=payload,
        client="test",
        dedupe_key=f"out|{sender}|{msg_id}",
    )


def to(receiver: str = "7200101", *, ordered: bool = True) -> NewDelivery:
    return NewDelivery(receiver, "PRIM", "memory", ordered=ordered)


class TestAccept:
    async def test_survives_reopen(self, make_store: StoreMaker) -> None:
        """What add_message returned is stored: another store on the same database reads it back."""
        async with make_store() as store:
            record, created = await store.add_message(message(), [to()], now=NOW)
        async with make_store() as store:
            view = await store.get(record.id)
        assert created and view is not None and view.message.state == MessageState.QUEUED
        assert [d.state for d in view.deliveries] == [DeliveryState.QUEUED]

    async def test_dedupe_key(self, store: Store) -> None:
        """The same dedupe key returns the first record, counts and traces the duplicate."""
        first, _ = await store.add_message(message("a"), [to()], now=NOW)
        again, created = await store.add_message(message("a"), [to()], now=NOW + 1)
        assert not created and again.id == first.id and again.duplicates == 1
        view = await store.get(first.id)
        assert view is not None and len(view.deliveries) == 1
        assert view.trace[-1].event == "message.duplicate"


class TestLeases:
    async def test_claim_is_exclusive_until_the_lease_expires(self, store: Store) -> None:
        """A leased delivery is not claimed again until its lease runs out; then it is, attempt 2."""
        await store.add_message(message(), [to()], now=NOW)
        [claim] = await store.claim_due(owner="a", now=NOW, limit=10, lease_s=30)
        assert claim.delivery.attempts == 1
        assert await store.claim_due(owner="b", now=NOW + 10, limit=10, lease_s=30) == []
        assert await store.reap_leases(now=NOW + 31) == 1  # the worker is gone: its lease is taken back
        [again] = await store.claim_due(owner="b", now=NOW + 31, limit=10, lease_s=30)
        assert again.delivery.id == claim.delivery.id and again.delivery.attempts == 2
        # the first worker's late result does not count: the lease is b's now
        assert not await store.mark_sent(claim.delivery.id, owner="a", now=NOW + 32, reason="late")
        assert await store.mark_sent(claim.delivery.id, owner="b", now=NOW + 32, reason="ok")
        view = await store.get(claim.message.id)
        assert view is not None and "delivery.lease_expired" in [t.event for t in view.trace]

    async def test_release_gives_back_unstarted_work(self, store: Store) -> None:
        """On shutdown the owner releases its leases; the work is due again at once."""
        await store.add_message(message(), [to()], now=NOW)
        await store.claim_due(owner="a", now=NOW, limit=10, lease_s=30)
        assert await store.release_leases("a", now=NOW + 1) == 1
        [claim] = await store.claim_due(owner="b", now=NOW + 1, limit=10, lease_s=30)
        assert claim.delivery.attempts == 1


class TestTransportOutcomes:
    async def test_only_a_sent_delivery_without_an_apprec_is_refused_by_its_transport(self, store: Store) -> None:
        """A transport's late word (refused, abandoned) changes a sent delivery; one that an AppRec settled first,
        or one not sent yet, stays as it is."""
        record, _ = await store.add_message(message(), [to()], now=NOW)
        def fail(message_id: str, now: float) -> Awaitable[bool]:
            return store.transport_failed(
                message_id, "7200101", now=now, code="delivery.refused", error="NHN: rejected", next_attempt_at=None
            )

        assert not await fail(record.id, NOW)  # queued: not sent yet
        [claim] = await store.claim_due(owner="a", now=NOW, limit=10, lease_s=30)
        assert await store.mark_sent(claim.delivery.id, owner="a", now=NOW + 1, reason="ok")
        assert await fail(record.id, NOW + 2)
        view = await store.get(record.id)
        assert view is not None
        [dead] = view.deliveries
        assert dead.state == DeliveryState.DEAD and dead.last_error_code == "delivery.refused"
        assert view.trace[-1].event == "delivery.dead" and view.trace[-1].detail["code"] == "delivery.refused"

        settled, _ = await store.add_message(message(), [to()], now=NOW)
        [claim] = await store.claim_due(owner="a", now=NOW, limit=10, lease_s=30)
        await store.mark_sent(claim.delivery.id, owner="a", now=NOW + 1, reason="ok")
        assert await store.settle_delivery(settled.id, "7200101", AppRecOutcome("1", (), "", NOW + 2), now=NOW + 2)
        assert not await fail(settled.id, NOW + 3)
        view = await store.get(settled.id)
        assert view is not None and view.deliveries[0].state == DeliveryState.ACKNOWLEDGED

    async def test_the_transports_word_can_come_before_the_send_is_recorded(self, store: Store) -> None:
        """NHN reports a rejection while the worker still holds the lease: the delivery is dead, and the
        worker's late "sent" finds it settled."""
        record, _ = await store.add_message(message(), [to()], now=NOW)
        [claim] = await store.claim_due(owner="a", now=NOW, limit=10, lease_s=30)
        assert await store.transport_failed(
            record.id, "7200101", now=NOW + 1, code="delivery.refused", error="NHN: rejected", next_attempt_at=None
        )
        assert not await store.mark_sent(claim.delivery.id, owner="a", now=NOW + 2, reason="ok")
        view = await store.get(record.id)
        assert view is not None and view.deliveries[0].state == DeliveryState.DEAD

    async def test_an_abandoned_delivery_can_wait_to_be_sent_again(self, store: Store) -> None:
        record, _ = await store.add_message(message(), [to()], now=NOW)
        [claim] = await store.claim_due(owner="a", now=NOW, limit=10, lease_s=30)
        await store.mark_sent(claim.delivery.id, owner="a", now=NOW + 1, reason="ok")
        assert await store.transport_failed(
            record.id, "7200101", now=NOW + 2, code="delivery.abandoned", error="abandoned", next_attempt_at=NOW + 60
        )
        assert await store.claim_due(owner="a", now=NOW + 59, limit=10, lease_s=30) == []
        [resend] = await store.claim_due(owner="a", now=NOW + 60, limit=10, lease_s=30)
        assert resend.delivery.id == claim.delivery.id and resend.delivery.attempts == 2


class TestLanes:
    async def test_ordered_lane_goes_one_at_a_time_in_acceptance_order(self, store: Store) -> None:
        """Ny -> Endring -> Kansellering: the second waits while the first is in flight or retrying."""
        ids = [(await store.add_message(message(f"m{i}"), [to()], now=NOW + i))[0].id for i in range(3)]
        [first] = await store.claim_due(owner="w", now=NOW + 10, limit=10, lease_s=30)
        assert first.message.id == ids[0]
        assert await store.claim_due(owner="w", now=NOW + 10, limit=10, lease_s=30) == []
        await store.reschedule(
            first.delivery.id, owner="w", now=NOW + 11, next_attempt_at=NOW + 100, code="x", error="peer down"
        )
        assert await store.claim_due(owner="w", now=NOW + 50, limit=10, lease_s=30) == []  # holds its lane
        [again] = await store.claim_due(owner="w", now=NOW + 100, limit=10, lease_s=30)
        assert again.message.id == ids[0]
        await store.mark_dead(again.delivery.id, owner="w", now=NOW + 101, code="S02", error="expired")
        [second] = await store.claim_due(owner="w", now=NOW + 101, limit=10, lease_s=30)  # dead releases it
        assert second.message.id == ids[1]

    async def test_lanes_do_not_block_each_other(self, store: Store) -> None:
        """Another sender or receiver is another lane; unordered routes send in parallel."""
        await store.add_message(message("a", sender="7100101"), [to()], now=NOW)
        await store.add_message(message("b", sender="7100201"), [to()], now=NOW)
        await store.add_message(message("c", sender="7100301"), [to(ordered=False)], now=NOW)
        await store.add_message(message("d", sender="7100301"), [to(ordered=False)], now=NOW)
        claims = await store.claim_due(owner="w", now=NOW, limit=10, lease_s=30)
        assert sorted(c.message.msg_id or "" for c in claims) == ["a", "b", "c", "d"]

    async def test_paused_route_is_not_claimed(self, store: Store) -> None:
        """A paused route keeps its messages until it is resumed; the trace says who did it."""
        record, _ = await store.add_message(message(), [to()], now=NOW)
        await store.pause("7200101", actor="ops", now=NOW)
        assert await store.claim_due(owner="w", now=NOW + 1, limit=10, lease_s=30) == []
        await store.resume("7200101", actor="ops", now=NOW + 2)
        assert len(await store.claim_due(owner="w", now=NOW + 2, limit=10, lease_s=30)) == 1
        view = await store.get(record.id)
        assert view is not None
        assert [(t.event, t.actor) for t in view.trace if t.event.startswith("operator.")] == [
            ("operator.pause", "ops"),
            ("operator.resume", "ops"),
        ]


class TestOperator:
    async def test_dead_letter_retried_and_cancelled(self, store: Store) -> None:
        """A dead delivery keeps its payload; an operator retries it with fresh attempts, or cancels it."""
        record, _ = await store.add_message(message(), [to()], now=NOW)
        [claim] = await store.claim_due(owner="w", now=NOW, limit=1, lease_s=30)
        await store.mark_dead(claim.delivery.id, owner="w", now=NOW + 1, code="S02", error="expired certificate")
        assert await store.payload(record.id) == b"<m/>"
        assert await store.retry_dead(route="7200101", actor="ops", now=NOW + 2, ttl_s=3600) == 1
        [claim] = await store.claim_due(owner="w", now=NOW + 2, limit=1, lease_s=30)
        assert claim.delivery.attempts == 1 and claim.delivery.expires_at == NOW + 2 + 3600
        await store.release_leases("w", now=NOW + 3)
        assert await store.cancel(record.id, actor="ops", now=NOW + 4) == 1
        view = await store.get(record.id)
        assert view is not None and view.message.state == MessageState.CANCELLED

    @pytest.mark.parametrize("fate", ["cancelled", "dead"])
    async def test_a_receiver_that_did_not_get_it_is_never_summarised_as_acknowledged(
        self, store: Store, fate: str
    ) -> None:
        """Item 14: the copy to the legevakt acknowledged, the primary to St. Olavs cancelled by an operator
        (or dead): the message must not read "acknowledged" - a receiver did not get it."""
        record, _ = await store.add_message(
            message(), [to(), NewDelivery("7103001", "COP", "local", ordered=True)], now=NOW
        )
        claims = {c.delivery.receiver_her: c for c in await store.claim_due(owner="w", now=NOW, limit=2, lease_s=30)}
        copy, primary = claims["7103001"].delivery, claims["7200101"].delivery
        await store.mark_sent(copy.id, owner="w", now=NOW + 1, reason="taken", state=DeliveryState.ACKNOWLEDGED)
        if fate == "dead":
            await store.mark_dead(primary.id, owner="w", now=NOW + 2, code="delivery.refused", error="refused")
        else:
            await store.release_leases("w", now=NOW + 2)
            assert await store.cancel(record.id, actor="ops", now=NOW + 3) == 1
        view = await store.get(record.id)
        assert view is not None
        assert {d.receiver_her: d.state for d in view.deliveries} == {"7103001": "acknowledged", "7200101": fate}
        assert view.message.state == fate

    async def test_prune_drops_payload_keeps_trace(self, store: Store) -> None:
        """After the retention period a finished message loses its payload, not its metadata or trace; a dead
        letter keeps its payload (an operator may still retry it), and a pruned message cannot be retried."""
        record, _ = await store.add_message(message(), [to()], now=NOW)
        [claim] = await store.claim_due(owner="w", now=NOW, limit=1, lease_s=30)
        await store.mark_dead(claim.delivery.id, owner="w", now=NOW, code="x", error="y")
        assert await store.prune(before=NOW + 1, now=NOW + 2) == 0  # dead: kept
        await store.cancel(record.id, actor="ops", now=NOW + 3)
        assert await store.prune(before=NOW - 1, now=NOW + 4) == 0  # not old enough
        assert await store.prune(before=NOW + 1, now=NOW + 5) == 1
        view = await store.get(record.id)
        assert view is not None and view.message.payload_pruned and await store.payload(record.id) is None
        assert view.trace[-1].event == "message.pruned"
        with pytest.raises(Conflict, match="pruned"):
            await store.retry(record.id, actor="ops", now=NOW + 6, ttl_s=60)


class TestRouteLimits:
    async def test_a_route_gets_no_more_than_its_share(self, store: Store) -> None:
        """Thirteen lanes to one receiver: a claim takes only as many as the route may have in flight."""
        for i in range(13):
            await store.add_message(message(f"m{i}", sender=f"71{i:02}101"), [to()], now=NOW)
        await store.add_message(message("other"), [to("7103001")], now=NOW)
        claims = await store.claim_due(owner="w", now=NOW, limit=32, lease_s=30, route_limits={"7200101": 4})
        by_route = Counter(c.delivery.receiver_her for c in claims)
        assert by_route == {"7200101": 4, "7103001": 1}
        probe = await store.claim_due(
            owner="w", now=NOW, limit=32, lease_s=30, route_limits={"7200101": 0}, skip=[c.delivery.id for c in claims]
        )
        assert probe == []


class TestPruneAppRecs:
    async def test_a_sent_apprec_is_finished(self, store: Store) -> None:
        """An AppRec expects no answer: once sent it is finished, and its payload is pruned in time."""
        apprec = dataclasses.replace(message("ar"), kind="apprec-1.1", msg_type="APPREC")
        record, _ = await store.add_message(apprec, [to()], now=NOW)
        [claim] = await store.claim_due(owner="w", now=NOW, limit=1, lease_s=30)
        await store.mark_sent(claim.delivery.id, owner="w", now=NOW, reason="sent")
        business, _ = await store.add_message(message("b"), [dataclasses.replace(to(), deadline_at=NOW + 10)], now=NOW)
        [claim] = await store.claim_due(owner="w", now=NOW, limit=1, lease_s=30)
        await store.mark_sent(claim.delivery.id, owner="w", now=NOW, reason="sent")
        assert await store.prune(before=NOW + 1, now=NOW + 2) == 1  # the AppRec; the message awaits its AppRec
        assert await store.payload(record.id) is None and await store.payload(business.id) is not None


async def test_a_refusal_keeps_what_the_transport_claimed_cut_to_size(store: Store) -> None:
    """Headers a peer fills with a megabyte cost the refusal log a few hundred bytes."""
    big = "7" * 1_000_000
    refusal = Refusal(at=NOW, via="http", event="security.unverified_packet", condition=None, code=None,
                      claimed_sender=big, claimed_receiver=big, transport_message_id=big, size=1, sha256="0" * 64,
                      reason=big)  # fmt: skip
    await store.add_refusal(refusal, keep=10)
    (kept,) = await store.refusals()
    assert len(kept.claimed_sender or "") == 32 and len(kept.transport_message_id or "") == 128
    assert len(kept.reason) == 4000

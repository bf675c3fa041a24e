"""The store contract, receipts and the EHR inbox (every store, tests/store/conftest.py): an AppRec settles the
delivery it answers once, an unmatched one is kept and flagged, the EHR's AppRec is one per message, the inbox
is taken once, and AppRec deadlines warn and then mark overdue once."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.errors import Conflict, NotFound
from gateway.store.base import (
    AppRecOutcome,
    DeliveryState,
    Direction,
    MessageState,
    NewDelivery,
    NewMessage,
    Store,
)

from .test_contract import NOW, message, to


def _apprec(n: str, *, sender: str = "7200101", receiver: str = "7100101") -> NewMessage:
    return dataclasses.replace(
        message(f"apprec-{n}", sender=sender),
        direction=Direction.IN,
        kind="apprec-1.1",
        msg_type="APPREC",
        receiver_her=receiver,
        state=MessageState.RECEIVED,
        dedupe_key=f"in|{sender}|apprec-{n}|{receiver}",
    )


async def _sent(store: Store, msg_id: str, **delivery: object) -> str:
    record, _ = await store.add_message(message(msg_id), [dataclasses.replace(to(), **delivery)], now=NOW)
    [claim] = await store.claim_due(owner="w", now=NOW, limit=1, lease_s=30)
    assert await store.mark_sent(claim.delivery.id, owner="w", now=NOW + 1, reason="sent")
    return record.id


async def test_an_apprec_settles_its_delivery_once(store: Store) -> None:
    sent = await _sent(store, "business-1")
    outcome = AppRecOutcome("2", (("E10", "unknown receiver"),), "", NOW + 2)
    record, matched, created = await store.apply_apprec(
        _apprec("1"),
        original_msg_id="business-1",
        original_sender_her_ids=["7100101"],
        answering_her_ids=["7200101"],
        outcome=outcome,
        now=NOW + 2,
    )
    assert created and matched == sent and record.apprec_of == sent
    again, matched_again, created_again = await store.apply_apprec(
        _apprec("1"),
        original_msg_id="business-1",
        original_sender_her_ids=["7100101"],
        answering_her_ids=["7200101"],
        outcome=outcome,
        now=NOW + 3,
    )
    assert not created_again and again.id == record.id and matched_again == sent
    view = await store.get(sent)
    assert view is not None
    [delivery] = view.deliveries
    assert delivery.state == DeliveryState.REJECTED and delivery.apprec is not None
    assert delivery.apprec.errors == (("E10", "unknown receiver"),)
    assert view.message.state == MessageState.REJECTED


async def test_an_apprec_answering_nothing_is_kept_as_unmatched(store: Store) -> None:
    record, matched, created = await store.apply_apprec(
        _apprec("2"),
        original_msg_id="never-sent",
        original_sender_her_ids=["7100101"],
        answering_her_ids=["7200101"],
        outcome=AppRecOutcome("1", (), "", NOW),
        now=NOW,
    )
    assert created and matched is None and record.state == MessageState.UNMATCHED


async def test_another_apprec_after_the_first_changes_nothing(store: Store) -> None:
    sent = await _sent(store, "business-3")
    assert await store.settle_delivery(sent, "7200101", AppRecOutcome("1", (), "", NOW + 2), now=NOW + 2)
    assert await store.settle_delivery(sent, "7200101", AppRecOutcome("2", (), "", NOW + 3), now=NOW + 3)
    view = await store.get(sent)
    assert view is not None and view.deliveries[0].state == DeliveryState.ACKNOWLEDGED
    assert "after it was settled" in view.trace[-1].reason
    assert not await store.settle_delivery("no-such-message", "7200101", AppRecOutcome("1", (), "", NOW), now=NOW)


async def test_the_inbox_is_taken_once_and_the_ehrs_apprec_is_one_per_message(store: Store) -> None:
    received = dataclasses.replace(
        message("in-1", sender="7200101"), direction=Direction.IN, receiver_her="7100101", state=MessageState.RECEIVED
    )
    record, _ = await store.add_message(
        received, [NewDelivery("7100101", "EHR", "ehr:inbox", state=DeliveryState.INBOX)], now=NOW
    )
    assert [m.id for m in await store.inbox("7100101")] == [record.id]
    assert await store.ack_inbox(record.id, actor="ehr", now=NOW + 1)
    assert not await store.ack_inbox(record.id, actor="ehr", now=NOW + 2)  # idempotent
    assert await store.inbox("7100101") == []
    with pytest.raises(NotFound):
        await store.ack_inbox("no-such-message", actor="ehr", now=NOW)
    answer = dataclasses.replace(message("ehr-apprec"), apprec_of=record.id, kind="apprec-1.1", msg_type="APPREC")
    await store.add_apprec_for(record.id, (answer, [to(ordered=False)]), actor="ehr", now=NOW + 3)
    with pytest.raises(Conflict, match="already answered"):
        second = dataclasses.replace(message("ehr-apprec-2"), apprec_of=record.id)
        await store.add_apprec_for(record.id, (second, [to(ordered=False)]), actor="ehr", now=NOW + 4)
    view = await store.get(record.id)
    assert view is not None and view.message.state == MessageState.DELIVERED
    assert [t.event for t in view.trace][-2:] == ["delivery.delivered", "apprec.queued"]


async def test_deadlines_warn_then_mark_overdue_once(store: Store) -> None:
    sent = await _sent(store, "business-5", warn_at=NOW + 10, deadline_at=NOW + 20)
    assert await store.mark_receipt_warnings(now=NOW + 5) == []
    [(warned, _, receiver)] = await store.mark_receipt_warnings(now=NOW + 11)
    assert (warned, receiver) == (sent, "7200101")
    assert await store.mark_receipt_warnings(now=NOW + 12) == []  # once
    [(overdue, _, _)] = await store.mark_overdue(now=NOW + 21)
    assert overdue == sent and await store.mark_overdue(now=NOW + 22) == []
    view = await store.get(sent)
    assert view is not None and view.message.state == MessageState.OVERDUE

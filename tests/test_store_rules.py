"""The storage-independent queue and receipt rules (gateway/store/rules.py): what a message shows, which
outcome counts, what an AppRec settles, what is finished - and that the SQL which must spell a state set out
(both schemas' partial indexes, both stores' claim queries) spells the rules' set."""

from __future__ import annotations

import re

from gateway.config import PROJECT_ROOT
from gateway.store import rules
from gateway.store.base import DeliveryState, Direction, MessageState


def test_a_message_shows_its_most_pressing_delivery() -> None:
    assert rules.summarise([]) is MessageState.ACCEPTED
    assert rules.summarise(["acknowledged", "dead", "sent"]) is MessageState.DEAD
    assert rules.summarise(["acknowledged", "sent"]) is MessageState.SENT
    # a receiver that did not get it (cancelled) is never summarised as acknowledged
    assert rules.summarise(["acknowledged", "cancelled"]) is MessageState.CANCELLED
    assert rules.summarise(["acknowledged", "acknowledged-with-errors"]) is MessageState.ACKNOWLEDGED_WITH_ERRORS


def test_lanes_and_first_due() -> None:
    assert rules.lane(Direction.OUT, "7100101", "7200101") == "out:7100101>7200101"
    assert rules.lane(Direction.IN, None, "7100101") == "in:->7100101"
    assert rules.due_at(DeliveryState.QUEUED, 5.0) == 5.0
    assert rules.due_at(DeliveryState.INBOX, 5.0) is None


def test_only_the_lease_holder_of_an_active_delivery_finishes_it() -> None:
    assert rules.may_finish("queued", "w1", "w1") and rules.may_finish("retrying", "w1", None)
    assert not rules.may_finish("queued", "w2", "w1")  # the lease ran out and w2 took it
    assert not rules.may_finish("acknowledged", "w1", "w1")  # an AppRec came first
    assert rules.stamps_sent_at(DeliveryState.SENT) and not rules.stamps_sent_at(DeliveryState.RETRYING)


def test_what_an_apprec_and_a_transport_report_settle() -> None:
    assert rules.apprec_state("2") is DeliveryState.REJECTED and sorted(rules.APPREC_STATUSES) == ["1", "2", "3"]
    assert "dead" in rules.APPREC_SETTLES and "acknowledged" not in rules.APPREC_SETTLES
    assert rules.transport_may_fail("sent", leased=False, apprec_status=None)
    assert rules.transport_may_fail("queued", leased=True, apprec_status=None)  # before the send is recorded
    assert not rules.transport_may_fail("queued", leased=False, apprec_status=None)
    assert not rules.transport_may_fail("sent", leased=False, apprec_status="1")
    assert rules.transport_failure_state(None) is DeliveryState.DEAD
    assert rules.transport_failure_state(10.0) is DeliveryState.RETRYING


def test_a_dead_letter_is_not_finished_and_an_operator_can_retry_it() -> None:
    assert "dead" not in rules.FINISHED and "dead" in rules.RETRYABLE_BY_OPERATOR
    assert set(rules.FINISHED).isdisjoint(rules.ACTIVE_STATES)


def test_the_sql_that_spells_the_active_states_out_spells_the_rules_set() -> None:
    active = "(" + ", ".join(f"'{s}'" for s in rules.ACTIVE_STATES) + ")"
    store = PROJECT_ROOT / "gateway" / "store"
    for name in ("schema.sql", "sqlite_queue.py", "postgres_schema.sql", "postgres_queue.py"):
        spelled = set(re.findall(r"state IN (\('queued'[^)]*\))", (store / name).read_text(encoding="utf-8")))
        assert spelled == {active}, (name, spelled)

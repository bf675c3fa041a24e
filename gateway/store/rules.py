"""The queue and receipt rules every store follows, independent of storage: the state sets they rest on and
pure functions with typed results. A store translates them to its SQL (the state sets become query
parameters) and writes none of its own, so SQLite and PostgreSQL cannot drift apart. Where a query must
spell a state set out - the claim queries and the partial indexes they use, whose ``WHERE`` a planner
matches only literally - it is :data:`ACTIVE_STATES`, and tests/test_store_rules.py holds the two together.

- **Summary**: the state an outbound message shows is the most pressing state of its deliveries.
- **Lanes**: deliveries of one sender to one receiver in one direction form a lane; in an ordered lane only
  the oldest active delivery is due.
- **Finish**: the worker's outcome counts only for an active delivery it still holds the lease of.
- **AppRecs**: an AppRec settles a delivery still waiting for one; a later one is traced, not applied.
- **Transport reports**: a far end's refusal counts for a delivery that is sent or being sent, without an AppRec.
- **Retention**: a message's payload may be dropped once every delivery is finished for good; a dead letter
  is not finished (it waits for an operator).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.store.base import ACTIVE, DeliveryState, Direction, MessageState, NewDelivery, NewMessage

__all__ = [
    "ACTIVE_STATES",
    "APPREC_SETTLES",
    "APPREC_STATUSES",
    "FINISHED",
    "MESSAGE_STATES_KEPT",
    "RETRYABLE_BY_OPERATOR",
    "apprec_state",
    "due_at",
    "first_state",
    "lane",
    "may_finish",
    "stamps_sent_at",
    "summarise",
    "transport_failure_state",
    "transport_may_fail",
]

#: the deliveries the worker still has to send (as strings, for queries)
ACTIVE_STATES = tuple(str(s) for s in ACTIVE)

#: the state an outbound message shows, from its deliveries' states: the one needing attention first. It
#: reads "acknowledged" only when every receiver acknowledged it: a delivery an operator cancelled outranks
#: the acknowledged ones (once nothing is in flight), so a sender never reads "acknowledged" for a receiver
#: that did not get it
_SUMMARY_ORDER = (
    DeliveryState.DEAD,
    DeliveryState.REJECTED,
    DeliveryState.RETRYING,
    DeliveryState.QUEUED,
    DeliveryState.OVERDUE,
    DeliveryState.SENT,
    DeliveryState.CANCELLED,
    DeliveryState.ACKNOWLEDGED_WITH_ERRORS,
    DeliveryState.ACKNOWLEDGED,
)

#: AppRec status -> the delivery state it settles to
_APPREC_OUTCOME = {
    "1": DeliveryState.ACKNOWLEDGED,
    "2": DeliveryState.REJECTED,
    "3": DeliveryState.ACKNOWLEDGED_WITH_ERRORS,
}

#: an AppRec settles a delivery still waiting for it (or one sent again after a lease ran out, or given up)
APPREC_SETTLES = tuple(
    str(s)
    for s in (
        DeliveryState.QUEUED,
        DeliveryState.RETRYING,
        DeliveryState.SENT,
        DeliveryState.OVERDUE,
        DeliveryState.DEAD,
    )
)

#: what an operator's retry sends again
RETRYABLE_BY_OPERATOR = tuple(
    str(s) for s in (DeliveryState.DEAD, DeliveryState.RETRYING, DeliveryState.QUEUED, DeliveryState.CANCELLED)
)

#: finished for good (a delivery that expects no AppRec is finished once sent, see :func:`finished`); a dead
#: letter is not - it keeps its payload until an operator retries or cancels it
FINISHED = tuple(
    str(s)
    for s in (
        DeliveryState.ACKNOWLEDGED,
        DeliveryState.ACKNOWLEDGED_WITH_ERRORS,
        DeliveryState.REJECTED,
        DeliveryState.CANCELLED,
        DeliveryState.DELIVERED,
        DeliveryState.OVERDUE,
    )
)

#: message states whose payload is kept whatever their deliveries say (still to be sent or handed over)
MESSAGE_STATES_KEPT = tuple(
    str(s) for s in (DeliveryState.QUEUED, DeliveryState.RETRYING, MessageState.RECEIVED, MessageState.ACCEPTED)
)


def summarise(states: Iterable[str]) -> MessageState:
    """The state of an outbound message with deliveries in ``states`` (accepted when it has none)."""
    present = set(states)
    for state in _SUMMARY_ORDER:
        if state in present:
            return MessageState(str(state))
    return MessageState.ACCEPTED


def first_state(m: NewMessage, deliveries: Sequence[NewDelivery]) -> MessageState:
    """The state a message is stored in: an outbound one shows its deliveries' summary from the start."""
    if m.direction is Direction.OUT and deliveries:
        return summarise(str(d.state) for d in deliveries)
    return m.state


def lane(direction: Direction | str, sender_her: str | None, receiver_her: str) -> str:
    """The lane of a delivery: one per direction, sender and receiver."""
    return f"{direction}:{sender_her or '-'}>{receiver_her}"


def due_at(state: DeliveryState, now: float) -> float | None:
    """When a new delivery in ``state`` is first due: now if the worker has it to send, else never."""
    return now if state in ACTIVE else None


def may_finish(state: str, lease_owner: str | None, owner: str | None) -> bool:
    """Whether a worker's outcome for a delivery counts: it is still active and - for ``owner`` given - still
    leased to that worker. Otherwise its lease ran out and someone else has it, or an AppRec settled it: the
    other outcome counts."""
    return state in ACTIVE_STATES and (owner is None or lease_owner == owner)


def stamps_sent_at(state: DeliveryState) -> bool:
    """Whether finishing a delivery in ``state`` records when it went."""
    return state in (DeliveryState.SENT, DeliveryState.DELIVERED)


#: the AppRec statuses (8220): 1 OK, 2 rejected, 3 OK with errors
APPREC_STATUSES = frozenset(_APPREC_OUTCOME)


def apprec_state(status: str) -> DeliveryState:
    """The delivery state an AppRec of ``status`` (1, 2, 3) settles to."""
    return _APPREC_OUTCOME[status]


def transport_may_fail(state: str, *, leased: bool, apprec_status: str | None) -> bool:
    """Whether a transport's report that the far end refused or abandoned a delivery counts: it is sent (or
    overdue), or being sent (the report can come before the worker records the send), and has no AppRec."""
    in_flight = state in ACTIVE_STATES and leased
    return (state in (DeliveryState.SENT, DeliveryState.OVERDUE) or in_flight) and apprec_status is None


def transport_failure_state(next_attempt_at: float | None) -> DeliveryState:
    """Dead, or - with a next attempt - waiting to be sent again."""
    return DeliveryState.DEAD if next_attempt_at is None else DeliveryState.RETRYING

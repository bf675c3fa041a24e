"""The ``Store`` contract: messages, their deliveries and their trace, with every state change one transaction.

A *message* is one KITH document as the gateway took it in (``direction`` out: from a local EHR; in: from
a transport). Each message has one *delivery* per receiver: the primary receiver and every copy receiver
of an outbound message, the local EHR of an inbound one. Deliveries carry the queue state (due time,
attempts, lease), so the delivery worker claims *deliveries*, never messages. The *trace* records every
state change of a message and its deliveries with time, reason, attempt and actor.

Claiming due work takes a lease that expires: a worker that dies mid-send leaves its deliveries to be
claimed again after the lease runs out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "ACTIVE",
    "AppRecOutcome",
    "Claim",
    "DeliveryRecord",
    "DeliveryState",
    "Direction",
    "MessageRecord",
    "MessageState",
    "MessageView",
    "NewDelivery",
    "NewMessage",
    "Page",
    "Refusal",
    "RouteState",
    "Store",
    "TraceEntry",
]


class Direction(StrEnum):
    OUT = "out"
    IN = "in"


class MessageState(StrEnum):
    # outbound (summarised over its deliveries)
    ACCEPTED = "accepted"
    QUEUED = "queued"
    RETRYING = "retrying"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    ACKNOWLEDGED_WITH_ERRORS = "acknowledged-with-errors"
    REJECTED = "rejected"
    OVERDUE = "overdue"
    DEAD = "dead"
    CANCELLED = "cancelled"
    # inbound
    RECEIVED = "received"
    DELIVERED = "delivered"
    MISADDRESSED = "misaddressed"
    UNMATCHED = "unmatched"  # an AppRec that answers nothing we sent


class DeliveryState(StrEnum):
    QUEUED = "queued"  # due now or at next_attempt_at
    RETRYING = "retrying"  # failed before; waits for next_attempt_at
    SENT = "sent"  # the transport took it; waiting for the AppRec
    ACKNOWLEDGED = "acknowledged"  # AppRec status 1
    ACKNOWLEDGED_WITH_ERRORS = "acknowledged-with-errors"  # AppRec status 3
    REJECTED = "rejected"  # AppRec status 2
    OVERDUE = "overdue"  # no AppRec within the deadline
    DEAD = "dead"  # given up (permanent failure, attempts or time to live exhausted)
    CANCELLED = "cancelled"  # by an operator
    INBOX = "inbox"  # inbound: waiting for the EHR to pull and ack it
    DELIVERED = "delivered"  # inbound: the EHR has it


#: Deliveries the worker still has to send.
ACTIVE = (DeliveryState.QUEUED, DeliveryState.RETRYING)


@dataclass(frozen=True)
class NewDelivery:
    receiver_her: str
    role: str  # PRIM | COP (inbound: EHR)
    channel: str  # how it goes: 'local', an adapter name ('http', ...), or 'ehr:inbox' / 'ehr:folder' / 'ehr:callback'
    state: DeliveryState = DeliveryState.QUEUED
    ordered: bool = True
    deadline_at: float | None = None
    warn_at: float | None = None
    expires_at: float | None = None
    #: who the receiver is, where the register does not say (a party outside the region, named by NHN's
    #: Adresseregister): shown in the delivery's first trace line
    receiver_name: str = ""


@dataclass(frozen=True)
class NewMessage:
    id: str
    direction: Direction
    kind: str | None
    msg_type: str | None
    msg_id: str | None
    sender_her: str | None
    receiver_her: str | None
    state: MessageState
    payload: bytes
    client: str
    dedupe_key: str | None  # unique: resubmitting the same message finds the first one
    conversation_ref: str | None = None
    gen_date: str | None = None
    error_code: str | None = None
    error_event: str | None = None
    error_text: str | None = None
    apprec_of: str | None = None  # for an AppRec we emit: the id of the message it answers
    reason: str = ""  # first trace line
    detail: dict[str, Any] = field(default_factory=dict)
    #: other dedupe keys whose holder this message is a duplicate of (without taking them), looked up first
    duplicate_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class TraceEntry:
    at: float
    state: str
    event: str
    reason: str
    delivery_id: int | None = None
    receiver_her: str | None = None
    attempt: int | None = None
    actor: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AppRecOutcome:
    status: str  # 1 | 2 | 3
    errors: tuple[tuple[str, str], ...]  # (code, text)
    apprec_message_id: str
    at: float


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    message_id: str
    receiver_her: str
    role: str
    channel: str
    lane: str
    ordered: bool
    state: DeliveryState
    attempts: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    sent_at: float | None = None
    last_error_code: str | None = None
    last_error: str | None = None
    deadline_at: float | None = None
    warn_at: float | None = None
    expires_at: float | None = None
    apprec: AppRecOutcome | None = None


@dataclass(frozen=True)
class MessageRecord:
    id: str
    direction: Direction
    kind: str | None
    msg_type: str | None
    msg_id: str | None
    sender_her: str | None
    receiver_her: str | None
    state: MessageState
    client: str
    created_at: float
    updated_at: float
    size: int
    payload_sha256: str
    conversation_ref: str | None = None
    gen_date: str | None = None
    error_code: str | None = None
    error_event: str | None = None
    error_text: str | None = None
    apprec_of: str | None = None
    duplicates: int = 0
    payload_pruned: bool = False


@dataclass(frozen=True)
class MessageView:
    message: MessageRecord
    deliveries: tuple[DeliveryRecord, ...]
    trace: tuple[TraceEntry, ...]


@dataclass(frozen=True)
class Claim:
    """A delivery leased to one worker, with what the worker needs to send it."""

    delivery: DeliveryRecord
    message: MessageRecord
    payload: bytes
    lease_owner: str
    lease_expires_at: float


@dataclass(frozen=True)
class Page:
    items: tuple[MessageRecord, ...]
    next_cursor: str | None


@dataclass(frozen=True)
class Refusal:
    """A packet refused at the transport, kept for operators as metadata and a digest - never its bytes,
    and never as a message: the sender it names is only what the transport claimed."""

    at: float
    via: str
    event: str
    condition: str | None
    code: str | None
    claimed_sender: str | None
    claimed_receiver: str | None
    transport_message_id: str | None
    size: int
    sha256: str
    reason: str
    cause: str | None = None
    id: int = 0

    def __post_init__(self) -> None:
        """What the transport claimed is cut to the sizes real values have: a peer's flood of refusals
        costs bounded storage whatever it puts in its headers (the one place every store relies on)."""
        for name, most in _REFUSAL_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, str) and len(value) > most:
                object.__setattr__(self, name, value[:most])


#: the longest each text field of a :class:`Refusal` may be
_REFUSAL_BOUNDS = {
    "via": 32,
    "event": 64,
    "cause": 64,
    "condition": 64,
    "code": 8,
    "claimed_sender": 32,
    "claimed_receiver": 32,
    "transport_message_id": 128,
    "reason": 4000,
}


@dataclass(frozen=True)
class RouteState:
    route: str
    paused: bool
    paused_by: str | None


class Store(Protocol):
    """What the pipeline, the worker, the API and the operator commands need from storage."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Store:
        """Opened; closed again on leaving."""
        ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def migrate(self) -> tuple[int, int]:
        """The schema version the store had when it was opened and the one it has now (opening migrates)."""
        ...

    # -- taking messages in ------------------------------------------------------------------------

    async def add_message(
        self,
        message: NewMessage,
        deliveries: Sequence[NewDelivery],
        *,
        now: float,
        follow_ups: Sequence[tuple[NewMessage, Sequence[NewDelivery]]] = (),
    ) -> tuple[MessageRecord, bool]:
        """Store a message and its deliveries - and the messages that follow from it (its AppRec) - in one
        transaction. Returns (record, created); when the dedupe key is taken the existing record is returned
        with created False, a trace line added and no follow-ups stored."""
        ...

    # -- the delivery queue -------------------------------------------------------------------------

    async def claim_due(
        self,
        *,
        owner: str,
        now: float,
        limit: int,
        lease_s: float,
        exclude_routes: Sequence[str] = (),
        route_limits: Mapping[str, int] | None = None,
        skip: Sequence[int] = (),
    ) -> list[Claim]:
        """Lease up to ``limit`` due deliveries. A route is a receiver HER-id; paused routes and the
        excluded ones (open circuit) are skipped, and no route gets more than its ``route_limits`` entry;
        in an ordered lane only the oldest active delivery is due; ids in ``skip`` (in flight) never are."""
        ...

    async def mark_sent(
        self, delivery_id: int, *, owner: str, now: float, reason: str, state: DeliveryState = DeliveryState.SENT
    ) -> bool:
        """Record a successful send (False: the lease was lost or an AppRec settled it first)."""
        ...

    async def reschedule(
        self, delivery_id: int, *, owner: str, now: float, next_attempt_at: float, code: str, error: str
    ) -> bool: ...

    async def mark_dead(self, delivery_id: int, *, owner: str | None, now: float, code: str, error: str) -> bool: ...

    async def release_leases(self, owner: str, *, now: float) -> int: ...

    async def reap_leases(self, *, now: float) -> int:
        """Take back expired leases (their worker is gone); each is traced once."""
        ...

    # -- receipts and the EHR inbox -------------------------------------------------------------------

    async def apply_apprec(
        self,
        message: NewMessage,
        *,
        original_msg_id: str | None,
        original_sender_her_ids: Sequence[str],
        answering_her_ids: Sequence[str],
        outcome: AppRecOutcome | None,
        now: float,
    ) -> tuple[MessageRecord, str | None, bool]:
        """Store a received AppRec and settle the delivery it answers: (record, matched message id, created)."""
        ...

    async def settle_delivery(self, message_id: str, receiver_her: str, outcome: AppRecOutcome, *, now: float) -> bool:
        """Settle a delivery with the AppRec outcome its transport reported (no AppRec document came)."""
        ...

    async def transport_failed(
        self, message_id: str, receiver_her: str, *, now: float, code: str, error: str, next_attempt_at: float | None
    ) -> bool:
        """The far end refused or abandoned a delivery its transport had taken (it is ``sent``, no AppRec yet):
        dead, or sent again at ``next_attempt_at``. False when there is no such delivery."""
        ...

    async def add_apprec_for(
        self, message_id: str, follow_up: tuple[NewMessage, Sequence[NewDelivery]], *, actor: str, now: float
    ) -> None:
        """Queue the EHR's AppRec for a received message (Conflict when it already has one)."""
        ...

    async def inbox(self, receiver_her: str, *, limit: int = 100) -> list[MessageRecord]: ...

    async def ack_inbox(self, message_id: str, *, actor: str, now: float) -> bool: ...

    async def mark_overdue(self, *, now: float) -> list[tuple[str, int, str]]: ...

    async def mark_receipt_warnings(self, *, now: float) -> list[tuple[str, int, str]]: ...

    # -- operator control and housekeeping ------------------------------------------------------------

    async def retry(self, message_id: str, *, actor: str, now: float, ttl_s: float | Mapping[str, float]) -> int: ...

    async def retry_dead(
        self, *, route: str | None, actor: str, now: float, ttl_s: float | Mapping[str, float]
    ) -> int: ...

    async def cancel(self, message_id: str, *, actor: str, now: float) -> int: ...

    async def pause(self, route: str, *, actor: str, now: float) -> None: ...

    async def resume(self, route: str, *, actor: str, now: float) -> None: ...

    async def routes(self) -> list[RouteState]: ...

    async def queue_counts(self) -> dict[str, dict[str, int]]: ...

    async def prune(self, *, before: float, now: float) -> int: ...

    async def add_refusal(self, refusal: Refusal, *, keep: int) -> int:
        """Record a refused packet; only the newest ``keep`` refusals are kept. Returns its id."""
        ...

    async def refusals(self, *, limit: int = 100, before: int | None = None) -> list[Refusal]:
        """Refused packets, newest first (ids below ``before`` when given)."""
        ...

    async def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever another process stores work that is due (PostgreSQL's LISTEN/NOTIFY), so an
        idle worker need not wait for its next poll; a store only one process writes (SQLite) never calls it.
        Best effort: a lost notification costs at most one poll interval."""
        ...

    async def take_turn(self, job: str, turn: int, *, owner: str, now: float) -> bool:
        """Whether ``owner`` takes ``turn`` of ``job`` (a housekeeping job's period): True for the first process
        to ask for a turn later than the last one taken, False for every other (the job runs once a period
        across the processes of a store)."""
        ...

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str | None) -> None: ...

    async def forget_meta(self, first: str, last: str) -> None:
        """Delete every meta key from ``first`` up to, not including, ``last``."""
        ...

    async def maintain(self) -> None: ...

    # -- looking ------------------------------------------------------------------------------------

    async def get(self, message_id: str) -> MessageView | None: ...

    async def payload(self, message_id: str) -> bytes | None: ...

    async def list_messages(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        direction: str | None = None,
        route: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
        parties: Sequence[str] | None = None,
    ) -> Page:
        """Newest first; ``parties`` limits it to what those HER-ids sent and received."""
        ...

    async def counts(self) -> dict[str, int]: ...

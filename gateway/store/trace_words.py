"""What the trace says, and the small decisions beside it, in one place for both stores: an operator reads the
same words whichever store a gateway runs on (``gateway queue show``, the API's trace)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.store.base import AppRecOutcome, Direction, MessageState, NewDelivery, NewMessage

__all__ = [
    "DEFAULT_TTL_S",
    "Ttl",
    "apprec_reason",
    "delivery_reason",
    "duplicate_reason",
    "first_line",
    "lease_expired_reason",
    "outcome_detail",
    "retried_ttl",
]

#: A fresh time to live for a retried delivery: one for all, or per route with "*" for the rest.
Ttl = float | Mapping[str, float]
#: a retried delivery's time to live where the settings name none for its route (HIS 1037's 96 hours)
DEFAULT_TTL_S = 96 * 3600.0


def retried_ttl(ttl_s: Ttl, route: str) -> float:
    """The time to live a retried delivery to ``route`` gets."""
    return ttl_s.get(route, ttl_s.get("*", DEFAULT_TTL_S)) if isinstance(ttl_s, Mapping) else ttl_s


def first_line(m: NewMessage) -> tuple[str, str, str]:
    """A new message's first trace line: the state, the event and the reason."""
    if m.direction is Direction.OUT:
        return str(MessageState.ACCEPTED), "message.accepted", m.reason or "message.accepted"
    return str(m.state), f"message.{m.state}", m.reason or f"message.{m.state}"


def delivery_reason(d: NewDelivery) -> str:
    """A new delivery's first trace line."""
    return f"to {d.receiver_her} ({d.role}) via {d.channel}" + (f": {d.receiver_name}" if d.receiver_name else "")


def duplicate_reason(same_content: bool, client: str) -> str:
    what = "the same message" if same_content else "the same MsgId with different content"
    return f"{what} came again via {client}"


def lease_expired_reason(owner: str, attempt: int) -> str:
    return f"the lease of {owner} ran out (its worker is gone); attempt {attempt} will be taken up again"


def outcome_detail(code: str | None, next_attempt_at: float | None) -> dict[str, Any]:
    """The trace detail of a delivery's outcome: its code and when it goes again, where there are."""
    detail: dict[str, Any] = {"next_attempt_at": next_attempt_at} if next_attempt_at is not None else {}
    if code:
        detail["code"] = code
    return detail


def apprec_reason(outcome: AppRecOutcome, receiver_her: str, *, settles: bool) -> str:
    """The trace line of an AppRec for a delivery: what it said, or that it came after another settled it."""
    if not settles:
        return f"another AppRec from {receiver_her} (status {outcome.status}) after it was settled"
    codes = ", ".join(f"{code} {text}".strip() for code, text in outcome.errors)
    return f"AppRec status {outcome.status} from {receiver_her}" + (f": {codes}" if codes else "")

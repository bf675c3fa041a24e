"""JSON shapes of what the API returns: messages, deliveries with their AppRec outcome, the trace."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.errors import GatewayError
from gateway.store.base import DeliveryRecord, MessageRecord, MessageView, TraceEntry

__all__ = ["error_body", "iso", "message_json", "summary_json", "view_json"]


def iso(ts: float | None) -> str | None:
    """A stored time as ISO 8601 - or None for one no calendar holds, so that no stored value can make a
    view fail."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError):
        return None


def error_body(exc: GatewayError) -> dict[str, Any]:
    return {"error": exc.describe()}


def summary_json(m: MessageRecord) -> dict[str, Any]:
    """The short form: what POST /v1/messages answers and lists show."""
    return {"id": m.id, "msg_id": m.msg_id, "kind": m.kind, "state": str(m.state)}


def message_json(m: MessageRecord) -> dict[str, Any]:
    return {
        **summary_json(m),
        "direction": str(m.direction),
        "msg_type": m.msg_type,
        "sender": m.sender_her,
        "receiver": m.receiver_her,
        "conversation_ref": m.conversation_ref,
        "gen_date": m.gen_date,
        "client": m.client,
        "size": m.size,
        "duplicates": m.duplicates,
        "apprec_of": m.apprec_of,
        "payload_pruned": m.payload_pruned,
        "error": (
            {"code": m.error_code, "event": m.error_event, "message": m.error_text}
            if m.error_event or m.error_code
            else None
        ),
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
    }


def delivery_json(d: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": d.id,
        "receiver": d.receiver_her,
        "role": d.role,
        "channel": d.channel,
        "state": str(d.state),
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at),
        "sent_at": iso(d.sent_at),
        "deadline_at": iso(d.deadline_at),
        "expires_at": iso(d.expires_at),
        "last_error": {"code": d.last_error_code, "message": d.last_error} if d.last_error else None,
        "apprec": (
            {
                "status": d.apprec.status,
                "errors": [{"code": c, "text": t} for c, t in d.apprec.errors],
                "message_id": d.apprec.apprec_message_id,
                "at": iso(d.apprec.at),
            }
            if d.apprec
            else None
        ),
    }


def trace_json(t: TraceEntry) -> dict[str, Any]:
    return {
        "at": iso(t.at),
        "state": t.state,
        "event": t.event,
        "reason": t.reason,
        "receiver": t.receiver_her,
        "attempt": t.attempt,
        "actor": t.actor,
        **({"detail": t.detail} if t.detail else {}),
    }


def view_json(view: MessageView) -> dict[str, Any]:
    return {
        **message_json(view.message),
        "deliveries": [delivery_json(d) for d in view.deliveries],
        "trace": [trace_json(t) for t in view.trace],
    }

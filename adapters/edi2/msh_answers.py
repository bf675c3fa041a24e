"""Reading NHN's Meldingstjener answers: the notifications and statuses as the adapter uses them, NHN's
message ids, and its words from either error format - tolerantly (unknown fields are ignored, NHN adds
fields) and within bounds: an entry that cannot be read is left out and logged, an id that is not one
never goes into a URL path."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import TransportError
from gateway.log import get_logger

__all__ = [
    "APPREC_STATUS",
    "Notification",
    "SentStatus",
    "is_nhn_id",
    "json_or_none",
    "nhn_id",
    "notification",
    "path_id",
    "problem",
    "read_json",
    "sent_status",
]

log = get_logger(__name__)

# NHN's ids are GUIDs; anything else from NHN never goes into a URL path
_NHN_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


@dataclass(frozen=True)
class Notification:
    """One entry of v3's global notification log (offsets grow with gaps; redelivery is normal)."""

    offset: int
    type: str
    related_message_id: str
    receiver_her: str
    notification_id: str = ""
    description: str = ""

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Notification:
        return cls(
            offset=int(data["offset"]),
            type=str(data.get("type", "")),
            related_message_id=str(data.get("relatedMessageId", "")),
            receiver_her=str(data.get("notificationReceiverHerId", "")),
            notification_id=str(data.get("notificationId", "")),
            description=str(data.get("description") or ""),
        )


@dataclass(frozen=True)
class SentStatus:
    """What NHN knows of a message we sent, for one receiver: the ebXML transport state and the AppRec."""

    receiver_her: str
    transport_state: str  # Unconfirmed | Acknowledged | Rejected | Abandoned
    apprec_status: str | None = None  # 1 | 2 | 3 (KITH 8258), None until an AppRec came
    apprec_errors: tuple[tuple[str, str], ...] = ()


APPREC_STATUS = {"Ok": "1", "Rejected": "2", "OkErrorInMessagePart": "3", "1": "1", "2": "2", "3": "3"}



def read_json(raw: bytes | str) -> Any:
    """NHN's JSON; an answer that is not JSON is a :class:`TransportError` (a proxy's page, a cut answer)."""
    try:
        return json.loads(raw)
    except ValueError:
        raise TransportError("NHN answered with something that is not JSON.") from None


def json_or_none(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def nhn_id(value: object, what: str) -> str:
    """NHN's id of a message it took: a GUID. Anything else is a :class:`TransportError` - the call may
    have been taken, so it is tried again (the receiver discards a second copy by its MsgId)."""
    if isinstance(value, str) and _NHN_ID.fullmatch(value.strip('"')):
        return value.strip('"')
    raise TransportError(f"NHN answered {what} without a message id the gateway can read.")


def is_nhn_id(value: str) -> bool:
    return _NHN_ID.fullmatch(value) is not None


def path_id(message_id: str) -> str:
    """A message id as it goes into a URL path: only what NHN's GUIDs are made of."""
    if not _NHN_ID.fullmatch(message_id):
        raise ValueError("not an NHN message id")
    return message_id


def notification(data: object) -> Notification | None:
    """One notification of NHN's log; one that cannot be read (no offset, no id) is left out, logged."""
    try:
        if not isinstance(data, dict):
            raise TypeError("not an object")
        notification = Notification.of(data)
        if notification.related_message_id:
            path_id(notification.related_message_id)
    except (KeyError, TypeError, ValueError):
        log.warning("edi2.unreadable_entry", code="edi2.unreadable_entry", listing="notifications")
        return None
    return notification


def problem(raw: bytes) -> str:
    """NHN's words from either error format (v3 problem details, v2 ErrorMessage), bounded."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return "no readable error body"
    if not isinstance(data, dict):
        return "no readable error body"
    said = str(data.get("detail") or data.get("title") or data.get("error") or "no reason given")
    errors = data.get("validationErrors") or []
    if isinstance(errors, list) and errors:
        said += "; validation: " + "; ".join(str(e)[:200] for e in errors[:10])
    code = data.get("errorCode")
    return (f"{said} (error code {code})" if code is not None else said)[:1000]


def sent_status(entry: Mapping[str, Any], apprec_status: object, errors: object) -> SentStatus:
    listed = errors if isinstance(errors, list) else []
    return SentStatus(
        receiver_her=str(entry.get("receiverHerId", "")),
        transport_state=str(entry.get("transportDeliveryState", "Unconfirmed")),
        apprec_status=APPREC_STATUS.get(str(apprec_status)) if apprec_status is not None else None,
        apprec_errors=tuple((str(e.get("errorCode", "")), str(e.get("details") or e.get("description") or ""))
                            for e in listed if isinstance(e, dict)),
    )  # fmt: skip

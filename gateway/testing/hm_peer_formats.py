"""The wire formats of Helsenorge.Messaging (HM), NHN's C# library for the Tjenestebuss, written out again
from docs (nhn-transports.md §2.2-§2.4) for the peer bot (:mod:`gateway.testing.hm_peer`) - on purpose
without :mod:`adapters.amqp.fields`, so that the gateway's reading and writing is checked against a second,
independent implementation.

- A business message: message-id a ``Guid.ToString("D")`` (hyphens), ``to`` the short queue name, the
  8279 message function as subject, ``reply-to`` the sender's queue of the same kind, the CMS content type,
  one ``Data`` section, and the application properties ``fromHerId``/``toHerId``/``applicationTimeStamp`` as
  strings (the time ``yyyy-MM-ddTHH:mm:ssK`` in UTC, so ``...Z``).
- An error-queue report (``AmqpCore.SendErrorAsync``, HM >= 7.0.2): message-id a ``Guid.ToString("N")``
  (32 hex digits), the original's subject, from/to swapped, ``originalMessageId``, ``receiverTimeStamp``
  in .NET's invariant culture (``MM/dd/yyyy HH:mm:ss``, not ISO), ``errorCondition``,
  ``errorDescription``, ``errorConditionData`` joined with ``;``; no content type, correlation-id or
  reply-to, and an empty ``Data`` section.
- The header check of ``MessageListener.ValidateMessageHeader``: toHerId, fromHerId, Label (the subject),
  applicationTimeStamp, ContentType - any missing is ``transport:invalid-field-value`` naming them all.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cproton import pn_message_get_content_type
from proton import Message

from gateway.errors import GatewayError

__all__ = [
    "HM_CMS_CONTENT_TYPE",
    "HM_PLAIN_CONTENT_TYPES",
    "HmHeader",
    "HmRefusal",
    "PeerErrorReport",
    "body_bytes",
    "business_message",
    "dotnet_invariant_stamp",
    "error_report",
    "guid_d",
    "guid_n",
    "hm_iso_stamp",
    "is_queue_name",
    "read_error_report",
    "read_header",
    "sender_claimed",
]

HM_CMS_CONTENT_TYPE = "application/pkcs7-mime; smime-type=signed-and-enveloped-data"
#: content types HM reads without decrypting (``ContentType.Text``, ``ContentType.Soap``)
HM_PLAIN_CONTENT_TYPES = frozenset({"text/plain", "application/soap+xml"})
#: the names ValidateMessageHeader reports (AmqpCore's header keys, "Label" and "ContentType")
TO_HER, FROM_HER, LABEL, TIMESTAMP, CONTENT_TYPE = (
    "toHerId",
    "fromHerId",
    "Label",
    "applicationTimeStamp",
    "ContentType",
)
_QUEUE = re.compile(r"[0-9A-Za-z_.\-]{1,200}")


def guid_d() -> str:
    """``Guid.NewGuid().ToString("D")``: 36 characters, hyphenated, lower case."""
    return str(uuid.uuid4())


def guid_n() -> str:
    """``Guid.NewGuid().ToString("N")``: 32 hex digits, no hyphens."""
    return uuid.uuid4().hex


def hm_iso_stamp(when: datetime | None = None) -> str:
    """``applicationTimeStamp`` as HM writes it: ``yyyy-MM-ddTHH:mm:ssK`` of a UTC time."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dotnet_invariant_stamp(when: datetime | None = None) -> str:
    """``DateTime.UtcNow.ToString(DateTimeFormatInfo.InvariantInfo)``: ``07/02/2026 12:31:17``."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%m/%d/%Y %H:%M:%S")


def is_queue_name(value: str | None) -> bool:
    return bool(value) and _QUEUE.fullmatch(value or "") is not None


def business_message(
    body: bytes,
    *,
    from_her: str,
    to_her: str,
    subject: str,
    queue: str,
    reply_to: str | None,
    message_id: str | None = None,
    correlation_id: str | None = None,
    ttl_s: float | None = None,
    content_type: str = HM_CMS_CONTENT_TYPE,
) -> Message:
    """An async message, a sync request or a sync reply as HM puts it on the bus."""
    message = Message(
        body=body,
        inferred=True,  # bytes as one Data section
        id=message_id or guid_d(),
        address=queue,
        subject=subject,
        content_type=content_type,
        durable=True,
        properties={"fromHerId": from_her, "toHerId": to_her, "applicationTimeStamp": hm_iso_stamp()},
    )
    if reply_to:
        message.reply_to = reply_to
    if correlation_id:
        message.correlation_id = correlation_id
    if ttl_s:
        message.ttl = ttl_s
    return message


def error_report(
    original: Message, *, reporter: str, sender: str, condition: str, description: str, data: Sequence[str] = ()
) -> Message:
    """HM's error-queue message about ``original`` (HITS 1216 §2.2.6), for ``<sender>_error``."""
    properties = {
        "fromHerId": reporter,
        "toHerId": sender,
        "applicationTimeStamp": hm_iso_stamp(),
        "originalMessageId": _text(original.id),
        "receiverTimeStamp": dotnet_invariant_stamp(),
        "errorCondition": condition,
        "errorDescription": description,
    }
    if data:
        properties["errorConditionData"] = ";".join(data)
    return Message(
        body=b"",
        inferred=True,
        id=guid_n(),
        address=f"{sender}_error",
        subject=_text(original.subject) or None,
        durable=True,
        properties=properties,
    )


class HmRefusal(GatewayError):
    """What HM reports to the sender's error queue: the condition, its description and the data items."""

    event = "hm_peer.refusal"

    def __init__(self, condition: str, description: str, data: Sequence[str] = ()) -> None:
        super().__init__(f"{condition}: {description}")
        self.condition = condition
        self.description = description
        self.data = tuple(data)


@dataclass(frozen=True)
class HmHeader:
    """The header fields of a received message that passed HM's check."""

    message_id: str
    from_her: str
    to_her: str
    subject: str
    content_type: str
    reply_to: str | None
    correlation_id: str | None


def read_header(message: Message) -> HmHeader:
    """The header fields, checked as ``ValidateMessageHeader`` does (every missing one named, in its order);
    a HER-id that is not a number is ``InvalidHerIdException``. Raises :class:`HmRefusal`."""
    props = _properties(message)
    to_her, from_her = props.get(TO_HER, "").strip(), props.get(FROM_HER, "").strip()
    subject = _text(message.subject)
    stamp = props.get(TIMESTAMP, "").strip()
    content_type = _content_type(message) or ""
    missing = []
    if to_her in ("", "0"):
        missing.append(TO_HER)
    if from_her in ("", "0"):
        missing.append(FROM_HER)
    if not subject:
        missing.append(LABEL)
    if not stamp or _parse_time(stamp) is None:  # (HM throws on a stamp it cannot parse: taken as missing here)
        missing.append(TIMESTAMP)
    if not content_type:
        missing.append(CONTENT_TYPE)
    if missing:
        raise HmRefusal("transport:invalid-field-value", "One or more fields are missing", missing)
    for name, value in (("FromHerId", from_her), ("ToHerId", to_her)):
        if not (value.isascii() and value.isdigit() and len(value) <= 12):
            raise HmRefusal("transport:invalid-field-value", f"Invalid {name}", [name, _printable(value)])
    return HmHeader(
        message_id=_text(message.id),
        from_her=from_her,
        to_her=to_her,
        subject=subject,
        content_type=content_type,
        reply_to=_text(message.reply_to) or None,
        correlation_id=_text(message.correlation_id) or None,
    )


def sender_claimed(message: Message) -> str | None:
    """``fromHerId`` when it is a HER-id: where a report can go."""
    value = _properties(message).get(FROM_HER, "").strip()
    return value if value.isascii() and value.isdigit() and value != "0" and len(value) <= 12 else None


@dataclass(frozen=True)
class PeerErrorReport:
    """An error-queue message the peer received, read tolerantly (either id spelling, either time format)."""

    message_id: str
    original_message_id: str
    condition: str
    description: str
    data: str
    from_her: str
    to_her: str
    subject: str
    receiver_timestamp: datetime | None


def read_error_report(message: Message) -> PeerErrorReport:
    props = _properties(message)
    return PeerErrorReport(
        message_id=_text(message.id),
        original_message_id=props.get("originalMessageId", "").strip(),
        condition=props.get("errorCondition", "").strip(),
        description=props.get("errorDescription", ""),
        data=props.get("errorConditionData", ""),
        from_her=props.get(FROM_HER, "").strip(),
        to_her=props.get(TO_HER, "").strip(),
        subject=_text(message.subject),
        receiver_timestamp=_parse_time(props.get("receiverTimeStamp", "")),
    )


def body_bytes(message: Message) -> bytes | None:
    """The one Data section's bytes, or None when the body is something else."""
    body = message.body
    if isinstance(body, memoryview):
        body = body.tobytes()
    return body if isinstance(body, bytes) else None


def _parse_time(text: str) -> datetime | None:
    text = text.strip()
    for parse in (lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")), _parse_dotnet):
        try:
            when = parse(text)
        except ValueError:
            continue
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def _parse_dotnet(text: str) -> datetime:
    return datetime.strptime(text, "%m/%d/%Y %H:%M:%S")


def _content_type(message: Message) -> str | None:
    value = pn_message_get_content_type(message._msg)  # proton reads an absent one as symbol('None')
    return None if value is None else str(value)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return "" if value is None else str(value)


def _printable(value: str, limit: int = 64) -> str:
    return re.sub(r"[^\x20-\x7e]", "", value)[:limit]


def _properties(message: Message) -> dict[str, str]:
    props: dict[Any, Any] = message.properties if isinstance(message.properties, dict) else {}
    return {str(k): _text(v) for k, v in props.items()}

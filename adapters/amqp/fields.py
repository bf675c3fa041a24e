"""What an AMQP message on NHN's Tjenestebuss carries, as HITS 1216 (§2.1-2.2) describes it and the
Helsenorge.Messaging library writes it: the queues of a communication party, the link addresses on
RabbitMQ, the fields of a message and of an error-queue report - built here from scratch, and read
tolerantly (hyphen-less message-ids, a non-ISO ``receiverTimeStamp``, no content type on an error report,
from/to not swapped).

Every application property is a string (``fromHerId`` is "8142987", not a number).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from cproton import pn_message_get_content_type
from proton import Message

from gateway.errors import GatewayError
from gateway.registry import is_her_id
from gateway.transport import Packet

__all__ = [
    "CMS_CONTENT_TYPE",
    "Addresses",
    "ErrorReport",
    "FieldProblem",
    "canonical_id",
    "content_type_of",
    "correlation_of",
    "error_message",
    "outgoing",
    "printable",
    "queue_name",
    "read_error",
    "read_packet",
    "reply_queue_of",
    "sender_of",
]

#: a signed-then-encrypted KITH message, as HITS 1216 §2.1.2 has it
CMS_CONTENT_TYPE = "application/pkcs7-mime; smime-type=signed-and-enveloped-data"
#: what a receiver takes (HITS 1216 lists these; Helsenorge.Messaging also takes text/plain)
READABLE_CONTENT_TYPES = frozenset(
    {
        CMS_CONTENT_TYPE,
        "application/pkcs7-mime; smime-type=enveloped-data",
        "application/pkcs7-mime; smime-type=signed-data",
        "application/soap+xml",
        "text/plain",
    }
)

_QUEUE = re.compile(r"[0-9A-Za-z_.\-]{1,200}")
_MAX_ID = 200
_MAX_TEXT = 1000
# Helsenorge.Messaging writes receiverTimeStamp with .NET's invariant culture: 07/02/2026 12:31:17
_DOTNET_STAMP = "%m/%d/%Y %H:%M:%S"


def queue_name(address: str) -> str:
    """The queue of an address as the Adresseregister and the CPA give it (``sb.test.nhn.no/DigitalDialog/
    93238_async``): the part after the last ``/`` (Helsenorge.Messaging's ``ExtractQueueName``)."""
    name = address.rsplit("/", 1)[-1].strip()
    if not _QUEUE.fullmatch(name):
        raise ValueError("A queue name is 1 to 200 letters, digits, '_', '.' or '-'.")
    return name


@dataclass(frozen=True)
class Addresses:
    """AMQP link addresses on RabbitMQ for one namespace (the exchange): format ``v1`` (the C# library's
    default and RabbitMQ 3.x) sends to ``/exchange/<ns>/<queue>`` and receives from ``/amq/queue/<queue>``;
    ``v2`` (RabbitMQ 4) uses ``/exchanges/<ns>/<queue>`` and ``/queues/<queue>``, percent-encoded."""

    namespace: str = ""
    format: Literal["v1", "v2"] = "v1"

    def sender(self, queue: str) -> str:
        if self.format == "v2":
            if not self.namespace:
                return f"/queues/{quote(queue, safe='')}"
            return f"/exchanges/{quote(self.namespace, safe='')}/{quote(queue, safe='')}"
        return f"/exchange/{self.namespace}/{queue}" if self.namespace else queue

    def receiver(self, queue: str) -> str:
        if self.format == "v2":
            return f"/queues/{quote(queue, safe='')}"
        return f"/amq/queue/{queue}" if self.namespace else queue


def iso_stamp(when: datetime) -> str:
    """``yyyy-MM-ddTHH:mm:ssZ`` in UTC, as Helsenorge.Messaging writes ``applicationTimeStamp``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def outgoing(
    packet: Packet,
    *,
    queue: str,
    reply_to: str | None,
    ttl_s: float | None = None,
    correlation_id: str | None = None,
    cpa_id: str | None = None,
) -> Message:
    """The AMQP message for a packet: a new message-id per attempt (the packet's, never the MsgId), one
    ``Data`` section with the raw CMS bytes, and the HITS 1216 application properties as strings (``cpaId``
    only when the parties have a CPA); a synchronous request or reply has its ``correlation_id`` (HITS 1216
    §2.2.2)."""
    message = Message(
        body=packet.body,
        inferred=True,  # bytes as one Data section, not an AMQP binary value
        id=packet.message_id,
        address=queue,
        subject=packet.subject,
        reply_to=reply_to,
        content_type=packet.content_type,
        durable=True,
        properties={
            "fromHerId": packet.from_her,
            "toHerId": packet.to_her,
            "applicationTimeStamp": iso_stamp(packet.application_timestamp),
            **({"cpaId": printable(cpa_id)} if cpa_id else {}),
        },
    )
    if ttl_s:
        message.ttl = ttl_s
    if correlation_id:
        message.correlation_id = correlation_id
    return message


def correlation_of(message: Message) -> str | None:
    """A synchronous message's correlation-id, when it has a readable one (printable, bounded)."""
    value = _text(message.correlation_id).strip()
    return value if re.fullmatch(r"[\x21-\x7e]{1,128}", value) else None


def reply_queue_of(message: Message) -> str | None:
    """The queue a synchronous request wants its reply on (``reply-to``), when it names one."""
    try:
        return queue_name(_text(message.reply_to))
    except ValueError:
        return None


class FieldProblem(GatewayError):
    """A received message whose header fields are missing or wrong: reported to the sender's error
    queue with ``condition``, naming the fields (never their values) in ``names``."""

    event = "amqp.bad_fields"

    def __init__(self, condition: str, description: str, names: tuple[str, ...]) -> None:
        super().__init__(description)
        self.condition = condition
        self.description = description
        self.names = names


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return "" if value is None else str(value)


def _properties(message: Message) -> dict[str, str]:
    props: dict[Any, Any] = message.properties if isinstance(message.properties, dict) else {}
    return {str(k): _text(v) for k, v in props.items()}


def content_type_of(message: Message) -> str | None:
    """The content type, or None when the message has none (proton's ``Message.content_type`` reads an absent
    one as ``symbol('None')``)."""
    value = pn_message_get_content_type(message._msg)
    return None if value is None else str(value)


def sender_of(message: Message) -> str | None:
    """The sender's HER-id as the message's ``fromHerId`` claims it, when it is one (where a report goes)."""
    value = _properties(message).get("fromHerId", "").strip()
    return value if is_her_id(value) else None


def read_packet(message: Message, *, queue: str, owner: str | None = None, max_body: int | None = None) -> Packet:
    """A received message as a packet, checking its header fields as Helsenorge.Messaging's
    ``ValidateMessageHeader`` does (toHerId, fromHerId, Label - the subject -, applicationTimeStamp,
    ContentType, in that order, by those names), then the message-id, the body's size (``max_body``) and
    that ``toHerId`` is the ``owner`` of the queue it came on (a message for another party); a problem raises
    :class:`FieldProblem` with ``transport:invalid-field-value`` and every field that is missing or wrong,
    as the library reports them."""
    props = _properties(message)
    bad: list[str] = []
    to_her = props.get("toHerId", "").strip()
    from_her = props.get("fromHerId", "").strip()
    for name, value in (("toHerId", to_her), ("fromHerId", from_her)):
        if not is_her_id(value):
            bad.append(name)
    subject = _text(message.subject)
    if not re.fullmatch(r"[\x20-\x7e]{1,128}", subject):
        bad.append("Label")
    when = read_time(props.get("applicationTimeStamp", ""))
    if when is None:
        bad.append("applicationTimeStamp")
    content_type = content_type_of(message) or ""
    if content_type not in READABLE_CONTENT_TYPES:
        bad.append("ContentType")
    message_id = _text(message.id)
    if not re.fullmatch(r"[\x21-\x7e]{1,128}", message_id):
        bad.append("message-id")
    if bad:
        raise FieldProblem(
            "transport:invalid-field-value", f"Header fields are missing or invalid: {', '.join(bad)}.", tuple(bad)
        )
    body = message.body
    if isinstance(body, memoryview):
        body = body.tobytes()
    if not isinstance(body, bytes):
        raise FieldProblem("transport:invalid-field-value", "The body must be one Data section.", ("body",))
    if max_body is not None and len(body) > max_body:  # refused before any crypto is done on it
        raise FieldProblem("transport:invalid-field-value", "The body is larger than this receiver takes.", ("body",))
    if owner is not None and to_her != owner:
        raise FieldProblem(
            "transport:invalid-field-value", "toHerId is not the party whose queue it came on.", ("toHerId",)
        )
    assert when is not None
    return Packet(
        body=body,
        message_id=message_id,
        from_her=from_her,
        to_her=to_her,
        content_type=content_type,
        subject=subject,
        application_timestamp=when,
        destination=queue,
    )


def read_time(text: str) -> datetime | None:
    """An ISO 8601 time (a zone-less one taken as UTC), or .NET's invariant ``MM/dd/yyyy HH:mm:ss``."""
    text = text.strip()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = datetime.strptime(text, _DOTNET_STAMP)
        except ValueError:
            return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ErrorReport:
    """An error-queue message (HITS 1216 §2.2.6): which message of ours the receiver could not take, and why."""

    original_message_id: str
    condition: str
    description: str
    data: str = ""
    from_her: str = ""  # who reports it (tolerated either way round: an old library did not swap)
    to_her: str = ""
    receiver_timestamp: datetime | None = None


def printable(value: Any, limit: int = 128) -> str:
    """A peer's value as printable ASCII of at most ``limit`` characters (what a report or a listing may
    carry of it: nothing that could steer a terminal, fill a queue or pass for another field)."""
    return re.sub(r"[^\x20-\x7e]", "", _text(value))[:limit]


def error_message(
    original: Message, condition: str, description: str, *, reporter: str, sender: str, data: str = ""
) -> Message:
    """An error-queue report about ``original``, built from scratch to the HITS 1216 table: a new message-id,
    the original's subject, ``fromHerId`` = ``reporter`` (the party whose queue it came on: us, whatever the
    original claimed) and ``toHerId`` = ``sender`` (its validated ``fromHerId``), no content type,
    correlation-id or reply-to, an empty Data section. Of the original, only its id and subject are carried,
    printable and bounded. Goes to ``<sender>_error``."""
    now = iso_stamp(datetime.now(UTC))
    properties = {
        "fromHerId": reporter,
        "toHerId": sender,
        "applicationTimeStamp": now,
        "originalMessageId": printable(original.id),
        "receiverTimeStamp": now,
        "errorCondition": condition,
        "errorDescription": description,
    }
    if data:
        properties["errorConditionData"] = data
    return Message(
        body=b"",
        inferred=True,
        id=str(uuid.uuid4()),
        address=f"{sender}_error",
        subject=printable(original.subject),
        durable=True,
        properties=properties,
    )


def read_error(message: Message) -> ErrorReport | None:
    """An error-queue message read tolerantly; None when it names no original message."""
    props = _properties(message)
    original = props.get("originalMessageId", "").strip()
    if not original:
        return None
    return ErrorReport(  # a peer's words, bounded before they reach a delivery's error and the trace
        original_message_id=original[:_MAX_ID],
        condition=props.get("errorCondition", "").strip()[:_MAX_ID] or "transport:unknown",
        description=props.get("errorDescription", "")[:_MAX_TEXT],
        data=props.get("errorConditionData", "")[:_MAX_TEXT],
        from_her=props.get("fromHerId", "").strip(),
        to_her=props.get("toHerId", "").strip(),
        receiver_timestamp=read_time(props.get("receiverTimeStamp", "")),
    )


def canonical_id(message_id: str) -> str:
    """A message-id in one spelling: a UUID with hyphens, lower case (HITS 1216 says UUID; Helsenorge.
    Messaging writes error reports' ids without hyphens), anything else as it is."""
    try:
        return str(uuid.UUID(message_id.strip()))
    except ValueError:
        return message_id.strip()

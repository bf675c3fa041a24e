"""The ``Transport`` contract every channel fulfils: what travels (a :class:`Packet`), what a receiver says
back (:class:`InboundResult`), what an adapter is built with (:class:`TransportContext`).

A *packet* is what travels: the message bytes (protected or plain, as the channel carries them) plus the
routing metadata of NHN's AMQP profile (messageId, fromHerId, toHerId, contentType, applicationTimeStamp
and the 8279 Type as subject). A transport ``send``s packets and raises
:class:`~gateway.errors.TransportError` when trying again later may help (with the peer's ``Retry-After``
when it gave one), or :class:`~gateway.errors.PermanentDeliveryError` when it cannot. Transports that also
receive hand each packet to one :data:`InboundHandler` and acknowledge their peer only after it returns.

The contract is part of the core: the pipelines and the delivery worker speak it, adapters (adapters/,
found by name through :mod:`adapters.base`) and the gateway's own hand-overs implement it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from gateway.errors import GatewayError, SyncNotSupported

if TYPE_CHECKING:
    from gateway.routing import Directory
    from gateway.security.certs import CertRef

__all__ = [
    "MAX_RETRY_AFTER_S",
    "CertificateBook",
    "DeliveryReports",
    "InboundHandler",
    "InboundResult",
    "MemoryState",
    "Packet",
    "SyncAnswerer",
    "Transport",
    "TransportContext",
    "TransportState",
    "retry_after",
    "retryable_status",
]

#: The longest wait a peer's Retry-After can impose on one attempt (the route's time to live still rules).
MAX_RETRY_AFTER_S = 24 * 3600.0


@dataclass(frozen=True)
class Packet:
    """One message on the wire, with NHN's AMQP routing metadata - and, for the channels that need them, the
    gateway's own references (never put on NHN's wire by the adapters that speak it)."""

    body: bytes
    message_id: str  # transport message id (a new one for each attempt, HITS 1216 §2.2.5; the MsgId stays)
    from_her: str
    to_her: str
    content_type: str
    subject: str  # the 8279 Type of the message inside
    application_timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    destination: str = ""  # where the adapter sends it: a URL, a folder, a memory address
    reference: str = ""  # the gateway's id of the message: the same on every attempt (an EHR's duplicate key)
    msg_id: str = ""  # the KITH MsgId of the message inside
    kind: str = ""  # its catalog kind (e.g. epikrise-1.2)

    def headers(self) -> dict[str, str]:
        """The metadata as HTTP-style headers (the http adapter and the folder sidecar use these)."""
        return {
            "X-Message-Id": self.message_id,
            "X-From-Her-Id": self.from_her,
            "X-To-Her-Id": self.to_her,
            "X-Subject": self.subject,
            "X-Application-Timestamp": self.application_timestamp.isoformat(),
            "Content-Type": self.content_type,
        }

    @classmethod
    def from_headers(cls, body: bytes, headers: Mapping[str, str], *, destination: str = "") -> Packet:
        """Rebuild a packet from its headers; a missing or malformed field raises ``ValueError`` whose
        message names the field and what it must be, never the value that was sent."""
        missing = [h for h in ("X-Message-Id", "X-From-Her-Id", "X-To-Her-Id", "Content-Type") if not headers.get(h)]
        if missing:
            raise ValueError(f"missing transport metadata: {', '.join(missing)}")
        stamp = _field(headers, "X-Application-Timestamp", _TIMESTAMP, "an ISO 8601 time")
        try:
            when = datetime.fromisoformat(stamp) if stamp else datetime.now(UTC)
        except ValueError:
            raise ValueError("X-Application-Timestamp must be an ISO 8601 time.") from None
        return cls(
            body=body,
            message_id=_field(headers, "X-Message-Id", _MESSAGE_ID, "1 to 128 visible ASCII characters"),
            from_her=_field(headers, "X-From-Her-Id", _HER_ID, "a HER-id: 1 to 12 digits").strip(" \t"),
            to_her=_field(headers, "X-To-Her-Id", _HER_ID, "a HER-id: 1 to 12 digits").strip(" \t"),
            content_type=_field(headers, "Content-Type", _CONTENT_TYPE, "a media type of at most 200 characters"),
            subject=_field(headers, "X-Subject", _SUBJECT, "at most 128 visible ASCII characters"),
            application_timestamp=when,
            destination=destination,
        )


# What each transport header may hold (HITS 1216's AMQP properties, bounded): a value outside its pattern
# is refused, so nothing unbounded or unprintable reaches the store, a log line or a trace.
_HER_ID = re.compile(r"[ \t]*[0-9]{1,12}[ \t]*")
_MESSAGE_ID = re.compile(r"[\x21-\x7e]{1,128}")
_SUBJECT = re.compile(r"[\x20-\x7e]{0,128}")
_CONTENT_TYPE = re.compile(r"[\x20-\x7e]{1,200}")
_TIMESTAMP = re.compile(r"[0-9T:+\-.Z ]{0,64}")


def _field(headers: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = headers.get(name) or ""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{name} must be {what}.")
    return value


@dataclass(frozen=True)
class InboundResult:
    """What the gateway says back to a peer about a received packet."""

    accepted: bool  # stored durably (or a known duplicate): acknowledge the peer
    retry_later: bool = False  # a temporary problem on our side: the peer should keep it and try again
    condition: str | None = None  # NHN transport error condition when refused
    code: str | None = None  # KITH code when there is one
    event: str | None = None
    message: str = ""
    reference: str | None = None  # our id of the stored message

    @classmethod
    def refused(cls, error: GatewayError, *, reference: str | None = None) -> InboundResult:
        """Not taken: for good, or - when the error is retryable - for now (the peer keeps it)."""
        return cls(
            False,
            retry_later=error.retryable,
            condition=error.transport_condition,
            code=error.apprec_code,
            event=error.event,
            message=error.public,
            reference=reference,
        )


#: The gateway's entry point for a received packet.
InboundHandler = Callable[[Packet], Awaitable[InboundResult]]

#: The gateway's answer to a synchronous request: the request packet in, the reply's body (as the channel
#: carries it) out. It raises a :class:`~gateway.errors.GatewayError` whose ``transport_condition`` and
#: ``public`` words the requester is told.
SyncAnswerer = Callable[[Packet], Awaitable[bytes]]


class TransportState(Protocol):
    """A little durable state an adapter keeps in the gateway's store (a notification offset, say): kept
    across restarts and shared by every gateway process on the same store."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str | None) -> None:
        """Keep ``value`` under ``key``; None forgets the key."""
        ...

    async def forget(self, first: str, last: str) -> None:
        """Forget every key from ``first`` up to, not including, ``last`` (keys sort as strings)."""
        ...


class DeliveryReports(Protocol):
    """What a transport learns of a delivery's fate after ``send`` returned, told to the gateway: NHN's
    Meldingstjener reports the ebXML transport state and the AppRec it got (status and 8221 errors) for a
    message it took. ``reference`` is the packet's (the gateway's message id), ``receiver_her`` its receiver."""

    async def transport_refused(self, reference: str, receiver_her: str, reason: str) -> None:
        """The receiver's system refused it (NHN's ``Rejected``): the delivery is dead, with ``reason``."""
        ...

    async def transport_abandoned(self, reference: str, receiver_her: str, reason: str) -> None:
        """The transport gave up on the receiver (NHN's ``Abandoned``: no receipt after its resends): dead or
        sent again, as the route's ``abandoned`` policy says."""
        ...

    async def receipt(
        self, reference: str, receiver_her: str, status: str, errors: Sequence[tuple[str, str]]
    ) -> None:
        """The receiver's AppRec as the transport reports it (no AppRec document reaches the gateway)."""
        ...


class MemoryState:
    """:class:`TransportState` in memory, for adapters built outside a gateway (tools, tests)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self._values.get(key)

    async def set(self, key: str, value: str | None) -> None:
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value

    async def forget(self, first: str, last: str) -> None:
        for key in [k for k in self._values if first <= k < last]:
            del self._values[key]


class CertificateBook(Protocol):
    """Where a channel puts the certificates its own source gives for a remote party (the amqp transport:
    the party's CPP/CPA), for the gateway's CMS to use where the region file pins none."""

    def learn(self, her_id: str, *, signing: CertRef | None, encryption: CertRef | None) -> None: ...

    def knows(self, her_id: str) -> bool:
        """Whether ``her_id`` is a party whose certificates are wanted (a remote party of the register)."""
        ...


@dataclass(frozen=True)
class TransportContext:
    """What an adapter gets when it is built: its own settings table, the gateway's data directory, the
    local HER-ids it serves (NHN's configurations, queues and notifications are per HER-id) and a place to
    keep durable state."""

    options: Mapping[str, Any] = field(default_factory=dict)
    data_dir: str = ""
    send_timeout_s: float = 30.0
    local_her_ids: tuple[str, ...] = ()
    state: TransportState = field(default_factory=MemoryState)
    reports: DeliveryReports | None = None
    #: answers the synchronous requests a channel that has them receives (None: it answers none)
    answer: SyncAnswerer | None = None
    #: takes the certificates a channel finds for a remote party (None: the channel's are not used)
    certificates: CertificateBook | None = None


class Transport:
    """Base class of every adapter: one core method, ``send``; the async context manager is written once.

    ``carries`` says what travels on the channel: ``"cms"`` - the packet is signed then encrypted by the
    gateway (http, amqp, memory, a peer's file area), so received packets are decrypted and verified before
    anything reads them - or ``"plain"`` - the message XML itself, because the channel's far end protects it
    (NHN's Meldingstjener signs and encrypts towards EDI users) or the channel stays inside this gateway.
    Protection is a property of the channel, never an assumption of the pipeline."""

    name: ClassVar[str] = ""
    carries: ClassVar[Literal["cms", "plain"]] = "cms"
    #: a successful send completes the delivery (a hand-over to the EHR: nothing answers it with an AppRec)
    completes: ClassVar[bool] = False
    #: a channel that reaches HER-ids outside the register may know which exist (NHN's Adresseregister):
    #: the routing asks it at submit when this channel is the default route
    directory: Directory | None = None

    def __init__(self, context: TransportContext | None = None) -> None:
        self.context = context or TransportContext()

    async def start(self, handler: InboundHandler) -> None:
        """Begin receiving (adapters that only send need not override)."""

    async def send(self, packet: Packet) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot send")

    async def prepare(self, from_her: str, to_her: str) -> None:
        """Called before a packet from ``from_her`` to ``to_her`` is protected: a channel that finds the
        receiver's certificates itself (amqp: its CPP/CPA) hands them to ``context.certificates`` here."""

    async def request(self, packet: Packet, *, timeout_s: float) -> Packet:
        """Send a synchronous request and wait up to ``timeout_s`` for its reply (the reply's packet).
        Channels with request/reply override this; it raises :class:`~gateway.errors.SyncTimeout`,
        :class:`~gateway.errors.SyncRefused` or a :class:`~gateway.errors.TransportError`."""
        raise SyncNotSupported(f"The {self.name or type(self).__name__} channel has no synchronous request/reply.")

    async def aclose(self) -> None:
        """Release connections, stop receiving."""

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


#: HTTP statuses that mean "not now" rather than "no" (besides every 5xx): Request Timeout, Too Early,
#: Too Many Requests
_RETRYABLE_STATUSES = frozenset({408, 425, 429})


def retryable_status(status: int) -> bool:
    """An HTTP answer worth trying again later: 408, 425, 429 or any 5xx (one rule for every HTTP peer)."""
    return status in _RETRYABLE_STATUSES or status >= 500


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` (delta-seconds or an HTTP-date), at most
    :data:`MAX_RETRY_AFTER_S`; None when absent or unreadable (then the route's own backoff decides)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return min(max(0.0, when.timestamp() - current), MAX_RETRY_AFTER_S)

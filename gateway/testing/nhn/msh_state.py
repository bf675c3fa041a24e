"""What the simulated Meldingstjener knows: messages, deliveries, the notification log and configurations.

Both API versions act on this one state, as NHN's v2 and v3 serve one store: a message sent with v3 is
unread in v2's ``GET /Messages`` until it is marked downloaded (v3) or read (v2) - one flag per receiver.
Nothing here speaks HTTP; a refusal is an :class:`MshError` with the status the API answers, and each
version's handlers turn it into their own error body.

Parties: an *API user* is a HER-id served through the API (listed in the simulator's config, configured
with ``PUT /mshconfigurations``, or a v2 sender); a message to one is made available inside the simulator
(a ``NewMessage`` notification, unread in v2). Every other known HER-id is an *EDI user* behind the
:class:`EdiSide` (the scripted peers of ``peers.py``); a HER-id that is neither is refused at submit, as NHN
refuses a receiver the address register does not know. Sender-side notifications (sent, delivery state,
AppRec info) go to the sender when it is an API user.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.model.apprec import ERROR_OID, ERROR_TEXTS, AppRecError, build_apprec
from gateway.model.envelope import Addressee, Envelope, Ident, read_envelope
from gateway.model.kinds import Catalog
from gateway.xml import parse

__all__ = [
    "AppRecErrorInfo",
    "AppRecInfo",
    "AppRecStatus",
    "Configuration",
    "Delivery",
    "DocumentInfo",
    "EdiSide",
    "MessageRecord",
    "MshError",
    "MshState",
    "Notification",
    "NotificationLog",
    "TransportState",
    "iso",
    "read_document",
]

TransportState = Literal["Unconfirmed", "Acknowledged", "Rejected", "Abandoned"]
AppRecStatus = Literal["Ok", "Rejected", "OkErrorInMessagePart"]
NotificationType = Literal[
    "NewMessage", "RefusedMessage", "MessageSentStateUpdated", "MessageApprecInfoUpdated", "MessageDeliveryStateUpdated"
]
_STATUS_CODES = {"Ok": "1", "Rejected": "2", "OkErrorInMessagePart": "3"}
#: NHN's errorCode for model validation errors (v2 spec examples); other errors carry 0 as in the v2 examples.
VALIDATION_ERROR_CODE = 1000


class MshError(GatewayError):
    """A refusal the simulated API answers: the HTTP status, the error text (NHN's words where its spec
    gives them) and any field-level validation errors. Each version's handlers shape the body."""

    event = "sim.msh_refused"

    def __init__(
        self, status: int, error: str, *, validation_errors: list[str] | None = None, error_code: int = 0
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.validation_errors = validation_errors
        self.error_code = error_code

    @classmethod
    def invalid(cls, errors: list[str]) -> MshError:
        return cls(400, "Model validation error occurred", validation_errors=errors, error_code=VALIDATION_ERROR_CODE)

    @classmethod
    def forbidden(cls, her_ids: Iterable[str]) -> MshError:
        return cls(403, f"Not authorized for HerId(s): {', '.join(her_ids)}")

    @classmethod
    def not_found(cls) -> MshError:
        return cls(404, "Could not find database document")


def iso(ts: float) -> str:
    """A UNIX time as the API writes times: ISO 8601 with the UTC offset."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


# --- the business document ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentInfo:
    """What the simulator reads from a business document: the header fields the API reports, and the
    envelope (parties) when the catalog knows the kind. Lenient: what cannot be read is None."""

    msg_id: str | None = None
    gen_date: str | None = None
    msg_type: str | None = None
    envelope: Envelope | None = field(default=None, repr=False)

    @property
    def gen_date_time(self) -> str | None:
        """GenDate as the API reports it: as written (an offset only if the document has one), a date
        alone completed to midnight, as NHN's DateTime serialisation does."""
        if not self.gen_date:
            return None
        return self.gen_date if "T" in self.gen_date else f"{self.gen_date}T00:00:00"

    @property
    def receiver_her_ids(self) -> list[str]:
        """Primary receiver first, then copy receivers - as NHN reads them from the document (v2)."""
        env = self.envelope
        found = [a.her_id for a in ([env.receiver] if env and env.receiver else []) + list(env.copies if env else ())]
        return [h for h in dict.fromkeys(found) if h]


def read_document(catalog: Catalog, document: bytes) -> DocumentInfo:
    """Read a document's MsgId, GenDate, Type and parties; empty for what is not a known KITH message."""
    try:
        root = parse(document, max_bytes=len(document) + 1).root
        envelope = read_envelope(catalog.identify(root), root)
    except GatewayError:
        return DocumentInfo()
    return DocumentInfo(envelope.msg_id, envelope.gen_date, envelope.msg_type, envelope)


# --- records ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppRecErrorInfo:
    """One error of an AppRec (code system 8221): as posted, and as NHN reports it back."""

    error_code: str
    details: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "errorCode": self.error_code,
            "details": self.details,
            "description": ERROR_TEXTS.get(self.error_code),
            "oid": ERROR_OID,
        }


@dataclass(frozen=True)
class AppRecInfo:
    status: AppRecStatus
    errors: tuple[AppRecErrorInfo, ...]
    apprec_id: str


@dataclass
class Delivery:
    """One receiver of a message: transport state, whether NHN has sent it there, the AppRec, and (for an
    API user) whether it is downloaded/read or was refused by the receiver's filters."""

    receiver: str
    state: TransportState = "Unconfirmed"
    sent: bool = False
    local: bool = False
    downloaded: bool = False
    refused: bool = False
    description: str | None = None
    apprec: AppRecInfo | None = None


@dataclass
class MessageRecord:
    id: str
    sender: str
    document: bytes
    info: DocumentInfo
    created_at: float
    deliveries: dict[str, Delivery]
    msg_type: str | None = None
    content_type: str = "application/xml"
    is_apprec: bool = False
    original_id: str | None = None

    @property
    def receivers(self) -> tuple[str, ...]:
        return tuple(self.deliveries)

    @property
    def parties(self) -> list[str]:
        return list(dict.fromkeys([self.sender, *self.deliveries]))


@dataclass(frozen=True)
class Notification:
    notification_id: str
    type: NotificationType
    related_message_id: str
    receiver: str
    triggered_by: str | None
    description: str | None
    created_at: float
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {
            "notificationId": self.notification_id,
            "relatedMessageId": self.related_message_id,
            "type": self.type,
            "notificationReceiverHerId": int(self.receiver),
            "notificationTriggeredByHerId": int(self.triggered_by) if self.triggered_by else None,
            "description": self.description,
            "createdAt": iso(self.created_at),
            "offset": self.offset,
        }


class NotificationLog:
    """The global notification log: offsets grow with gaps (other parties' notifications live between
    ours at NHN), readers filter by receiver HER-id and resume *after* an offset they processed."""

    _GAPS = (1, 3, 2, 7, 1, 4)  # deterministic, so a test can tell a gap from a lost notification

    def __init__(self, clock: Clock, *, first_offset: int = 1000) -> None:
        self._clock = clock
        self._entries: list[Notification] = []
        self._offsets: list[int] = []
        self._next = first_offset
        self._gaps = itertools.cycle(self._GAPS)
        self._changed = asyncio.Event()
        self.closed = False
        #: asked once per notification whether to write it twice (the ``duplicate`` fault)
        self.duplicate: Callable[[], bool] = lambda: False

    def append(
        self,
        type_: NotificationType,
        message_id: str,
        receiver: str,
        triggered_by: str | None,
        description: str | None = None,
    ) -> Notification:
        note = Notification(
            str(uuid.uuid4()), type_, message_id, receiver, triggered_by, description, self._clock.now(), self._take()
        )
        self._add(note)
        if self.duplicate():
            self._add(dataclasses.replace(note, offset=self._take()))
        self._changed.set()
        self._changed = asyncio.Event()
        return note

    def _take(self) -> int:
        offset = self._next
        self._next += next(self._gaps)
        return offset

    def _add(self, note: Notification) -> None:
        self._entries.append(note)
        self._offsets.append(note.offset)

    @property
    def tail(self) -> int:
        """The last offset written (0 before the first): where a stream without ``Offset`` starts."""
        return self._offsets[-1] if self._offsets else 0

    def read(self, her_ids: frozenset[str], after: int, limit: int) -> tuple[list[Notification], int]:
        """Up to ``limit`` notifications for ``her_ids`` with an offset above ``after``, and the offset to
        read after next time (past the other parties' notifications that were skipped)."""
        found: list[Notification] = []
        cursor = after
        for note in self._entries[bisect.bisect_right(self._offsets, after) :]:
            if len(found) == limit:
                break
            cursor = note.offset
            if note.receiver in her_ids:
                found.append(note)
        return found, cursor

    async def wait(self, after: int, idle: float) -> None:
        """Return when something is written after ``after``, the log closes, or ``idle`` seconds pass."""
        if self.closed or self.tail > after:
            return
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), idle)

    def close(self) -> None:
        """End every waiting reader (the server is shutting down)."""
        self.closed = True
        self._changed.set()


@dataclass(frozen=True)
class Configuration:
    """One HER-id's MSH configuration (v3): channel, lock owner, refused message types, refusal notices."""

    her_id: str
    channel: str = "Api"
    locked_by: str | None = None
    reject_message_functions: frozenset[str] = frozenset()
    receive_refused: bool = False


class EdiSide(Protocol):
    """The EDI users NHN reaches over ebXML for API users (in the simulator: scripted peers)."""

    def is_edi_user(self, her_id: str) -> bool: ...

    def accept(self, message: MessageRecord, receiver: str) -> None: ...


# --- the state ----------------------------------------------------------------------------------------


class MshState:
    """The simulator's store and the rules that change it (one asyncio loop: no operation awaits)."""

    def __init__(
        self, clock: Clock, catalog: Catalog, *, api_users: Iterable[str] = (), first_offset: int = 1000
    ) -> None:
        self.clock = clock
        self.catalog = catalog
        self.api_users: set[str] = set(api_users)
        self.messages: dict[str, MessageRecord] = {}
        self.configurations: dict[str, Configuration] = {}
        self.log = NotificationLog(clock, first_offset=first_offset)
        self.edi: EdiSide | None = None

    def is_api_user(self, her_id: str) -> bool:
        return her_id in self.api_users

    def _is_known(self, her_id: str) -> bool:
        return self.is_api_user(her_id) or (self.edi is not None and self.edi.is_edi_user(her_id))

    # configurations (v3) ------------------------------------------------------------------------------

    def require_configured(self, her_ids: Iterable[str]) -> None:
        missing = [h for h in her_ids if h not in self.configurations]
        if missing:
            raise MshError(
                400, f"No MSH configuration for HerId(s): {', '.join(missing)}. Send PUT /mshconfigurations first."
            )

    def require_unlocked(self, client_id: str, her_ids: Iterable[str]) -> None:
        locked = [h for h in her_ids if (c := self.configurations.get(h)) and c.locked_by not in (None, client_id)]
        if locked:
            raise MshError(423, f"HerId(s) reserved by another client (clientLocked): {', '.join(locked)}")

    def configure(self, client_id: str, configurations: Sequence[Configuration]) -> None:
        """Write configurations as given (each replaces that HER-id's); none is written if one is locked."""
        self.require_unlocked(client_id, [c.her_id for c in configurations])
        for config in configurations:
            self.configurations[config.her_id] = config
            self.api_users.add(config.her_id)

    def delete_configurations(self, client_id: str, her_ids: Sequence[str]) -> None:
        self.require_unlocked(client_id, her_ids)
        missing = [h for h in her_ids if h not in self.configurations]
        if missing:
            raise MshError(404, f"No MSH configuration for HerId(s): {', '.join(missing)}")
        for her_id in her_ids:
            del self.configurations[her_id]

    # messages -----------------------------------------------------------------------------------------

    def get(self, message_id: str) -> MessageRecord:
        record = self.messages.get(message_id)
        if record is None:
            raise MshError.not_found()
        return record

    def submit(
        self, sender: str, receivers: Sequence[str], document: bytes, *, msg_type: str | None = None
    ) -> MessageRecord:
        """An API user sends: refused (400) for a receiver nobody knows, else stored and routed."""
        unknown = [r for r in receivers if not self._is_known(r)]
        if unknown:
            raise MshError(400, f"Could not find communication party for HerId(s) {', '.join(unknown)} in the AR")
        return self._store(sender, receivers, document, msg_type=msg_type)

    def receive_from_edi(self, sender: str, receivers: Sequence[str], document: bytes) -> MessageRecord:
        """An EDI user's message to API users of the region (raises ``ValueError`` for anyone else)."""
        foreign = [r for r in receivers if not self.is_api_user(r)]
        if not receivers or foreign:
            raise ValueError(f"an EDI user can only send to API users of the simulator, not {foreign or 'nobody'}")
        return self._store(sender, receivers, document)

    def _store(
        self,
        sender: str,
        receivers: Sequence[str],
        document: bytes,
        *,
        msg_type: str | None = None,
        original_id: str | None = None,
    ) -> MessageRecord:
        info = read_document(self.catalog, document)
        record = MessageRecord(
            id=str(uuid.uuid4()),
            sender=sender,
            document=document,
            info=info,
            created_at=self.clock.now(),
            deliveries={r: Delivery(r) for r in receivers},
            msg_type=info.msg_type or msg_type,
            is_apprec=original_id is not None,
            original_id=original_id,
        )
        self.messages[record.id] = record
        for receiver in receivers:
            if self.is_api_user(receiver):
                self._deliver_local(record, receiver)
            elif self.edi is not None and self.edi.is_edi_user(receiver):
                self.edi.accept(record, receiver)
        return record

    def _deliver_local(self, record: MessageRecord, receiver: str) -> None:
        delivery = record.deliveries[receiver]
        delivery.local = True
        config = self.configurations.get(receiver)
        if config is not None and record.msg_type in config.reject_message_functions:
            delivery.refused = True
            self.set_transport_state(record, receiver, "Rejected", "Refused by the receiver's rejectMessageFilters")
            if config.receive_refused:
                self.log.append("RefusedMessage", record.id, receiver, record.sender, "The message was refused.")
            return
        self.set_sent(record, receiver)
        self.log.append("NewMessage", record.id, receiver, record.sender, "A new message is available for download.")

    def _tell_sender(self, record: MessageRecord, type_: NotificationType, receiver: str, text: str | None) -> None:
        if self.is_api_user(record.sender):
            self.log.append(type_, record.id, record.sender, receiver, text)

    def set_sent(self, record: MessageRecord, receiver: str) -> None:
        delivery = record.deliveries[receiver]
        if not delivery.sent:
            delivery.sent = True
            self._tell_sender(record, "MessageSentStateUpdated", receiver, "The message has been sent.")

    def set_transport_state(
        self, record: MessageRecord, receiver: str, state: TransportState, description: str | None = None
    ) -> None:
        delivery = record.deliveries[receiver]
        if delivery.state != state:
            delivery.state = state
            delivery.description = description
            self._tell_sender(
                record, "MessageDeliveryStateUpdated", receiver, description or f"Delivery state {state}."
            )

    def mark_downloaded(self, record: MessageRecord, receiver: str) -> None:
        """The receiver has the message (v3 downloaded, v2 read): off its unread list, and - as the ebXML
        acknowledgment of a receiving MSH would - the sender's transport state becomes Acknowledged."""
        delivery = record.deliveries.get(receiver)
        if delivery is None or not delivery.local:
            raise MshError(400, f"HerId {receiver} is not a receiver of message {record.id}")
        if not delivery.downloaded:
            delivery.downloaded = True
            if delivery.state == "Unconfirmed":
                self.set_transport_state(record, receiver, "Acknowledged")

    def answer(
        self, record: MessageRecord, sender: str, status: AppRecStatus, errors: Sequence[AppRecErrorInfo] = ()
    ) -> MessageRecord:
        """``sender`` (a receiver of ``record``) answers it with an AppRec, which NHN builds: the original's
        sender sees it as AppRec info on the status and gets it as a message of its own."""
        if record.is_apprec:
            raise MshError(400, "An application receipt cannot be answered with an application receipt")
        if sender not in record.deliveries:
            raise MshError(400, f"HerId {sender} is not a receiver of message {record.id}")
        if status == "Rejected" and not errors:
            raise MshError.invalid(["AppRecErrorList must be populated when AppRecStatus is Rejected."])
        document = apprec_document(self.catalog, record, sender, status, errors, self.clock)
        apprec = self._store(sender, [record.sender], document, original_id=record.id)
        record.deliveries[sender].apprec = AppRecInfo(status, tuple(errors), apprec.id)
        self._tell_sender(record, "MessageApprecInfoUpdated", sender, f"Application receipt received: {status}.")
        return apprec

    def unread(self, receivers: Iterable[str]) -> list[tuple[MessageRecord, str]]:
        """(message, receiver) for every message made available to ``receivers`` and not yet read."""
        wanted = set(receivers)
        return [
            (m, d.receiver)
            for m in self.messages.values()
            for d in m.deliveries.values()
            if d.receiver in wanted and d.local and d.sent and not d.downloaded and not d.refused
        ]


def apprec_document(
    catalog: Catalog,
    original: MessageRecord,
    answering: str,
    status: AppRecStatus,
    errors: Sequence[AppRecErrorInfo],
    clock: Clock,
) -> bytes:
    """The AppRec 1.1 NHN builds for an answer: the parties as the original names them (the answering
    receiver PRIM or COP), or by HER-id alone when the original is no message kind the catalog knows."""
    envelope = original.info.envelope
    party, role = None, "PRIM"
    if envelope is not None:
        if envelope.receiver is not None and answering in envelope.receiver.her_ids:
            party = envelope.receiver
        else:
            party = next((c for c in envelope.copies if answering in c.her_ids), None)
            role = "PRIM" if party is None else "COP"
    if envelope is None or envelope.sender is None:
        envelope = Envelope(
            kind=catalog.kinds[0],  # build_apprec reads no field of the kind; an unknown original has none
            msg_type=original.msg_type,
            msg_type_name=None,
            mig_version=None,
            msg_id=original.info.msg_id or original.id,
            gen_date=original.info.gen_date,
            sender=_by_her(original.sender),
            receiver=None,
        )
    return build_apprec(
        envelope,
        version="1.1",
        answering=party or _by_her(answering),
        role=role,
        status=_STATUS_CODES[status],
        errors=tuple(AppRecError(e.error_code, e.details or "") for e in errors),
        now=datetime.fromtimestamp(clock.now(), UTC),
    )


def _by_her(her_id: str) -> Addressee:
    return Addressee(f"HER-id {her_id}", (Ident(her_id, "HER"),))

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

The business documents and the AppRecs NHN builds are ``msh_documents.py``, the notification log
``msh_log.py``; their names stay importable from here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.model.kinds import Catalog
from gateway.testing.nhn.msh_documents import (
    AppRecErrorInfo,
    AppRecInfo,
    AppRecStatus,
    DocumentInfo,
    apprec_document,
    read_document,
)
from gateway.testing.nhn.msh_log import Notification, NotificationLog, NotificationType, iso

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


# --- records ------------------------------------------------------------------------------------------


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

"""The gateway's exceptions: one root, each class carrying what the pipeline needs to act on it.

Every class has a stable ``event`` code (listed in docs/error-codes.md, used as ``code=`` in log lines),
says whether the failure is ``retryable``, and - where a sender can be told - the KITH AppRec error code
(code system 2.16.578.1.12.4.1.1.8221) and the NHN transport error condition (HITS 1216). The pipeline
reads these attributes from the exception; it never maps exception types in a ladder. Anything that is
not a ``GatewayError`` is treated as unknown: retried, never reported to the sender.

    GatewayError
    ├── MessageError                  the message itself is wrong; answered, never retried
    │   ├── NotWellFormed             T01
    │   │   ├── ForbiddenMarkup       T01  DOCTYPE / entity declarations
    │   │   ├── MessageTooLarge       T01  over the configured size cap
    │   │   └── UnreadableEncoding    T01
    │   ├── SchemaInvalid             T02
    │   ├── MissingField              T02  a field the gateway needs (MsgId, sender, receiver) is absent
    │   ├── UnsupportedMessage        T10
    │   ├── InvalidMsgId              E10
    │   ├── ImplausibleDate           X99  a GenDate far ahead of the clock (or before 1990)
    │   ├── UnknownReceiver           E21
    │   ├── PatientNotIdentified      E36
    │   └── MetadataMismatch          E10  transport metadata disagrees with the payload (HITS 1216 §2.2.3)
    ├── SecurityError                 CMS protection and certificate trust
    │   ├── UnverifiedPacket          the one answer to a peer for every failure before a verified signature
    │   ├── SignatureInvalid          S01
    │   ├── CertificateInvalid        S02
    │   │   ├── CertificateExpired    S02  outside its validity period
    │   │   ├── CertificateKeyUsage   S02  wrong key usage for the purpose
    │   │   └── CertificateUntrusted  S02  no path to a trust anchor
    │   ├── CertificateRevoked        S03
    │   ├── RevocationUnavailable     retryable: the CRL could not be had (Helsenorge "RevokedOffline")
    │   ├── DecryptionFailed          one answer for every decryption failure (no padding oracle)
    │   ├── InvalidCms                not a CMS structure of the expected profile
    │   ├── KeyUnavailable            retryable: this gateway lacks a key or certificate it needs
    │   └── SpoofingDetected          signer is not the claimed sender
    ├── DeliveryError                 handing a packet to a transport
    │   ├── TransportError            retryable: peer down, timeout, 5xx (with the peer's Retry-After)
    │   │   ├── NotAuthorized         retryable, an operator's fix: NHN's 403 for a HER-id
    │   │   ├── ChannelLocked         retryable, an operator's fix: NHN's 423 (another client holds our HER-id)
    │   │   └── AuthenticationRefused retryable, an operator's fix: HelseID or NHN refused our client
    │   └── PermanentDeliveryError    not retryable: the peer refused the packet for good
    │       └── NoRoute               no adapter/endpoint for the receiver
    ├── RequestError                  an API call that cannot be served (HTTP 4xx)
    │   ├── Unauthorized, Forbidden, NotFound, Conflict, BadRequest
    │   └── Refusal                   a limit of the HTTP service (gateway/api/limits.py)
    │       ├── TooManyRequests, Busy, ReadTimeout, UnsupportedEncoding, BadBody
    │       └── ClientGone            the client left before its body arrived
    ├── ConfigError                   the configuration or register is unusable
    ├── UnexpectedError               retryable: an exception that is not ours, wrapped (a bug)
    └── StoreError                    the store failed (retryable)
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "AuthenticationRefused",
    "BadBody",
    "BadRequest",
    "Busy",
    "CertificateExpired",
    "CertificateInvalid",
    "CertificateKeyUsage",
    "CertificateRevoked",
    "CertificateUntrusted",
    "ChannelLocked",
    "ClientGone",
    "ConfigError",
    "Conflict",
    "DecryptionFailed",
    "DeliveryError",
    "Forbidden",
    "ForbiddenMarkup",
    "GatewayError",
    "ImplausibleDate",
    "InvalidCms",
    "InvalidMsgId",
    "KeyUnavailable",
    "MessageError",
    "MessageTooLarge",
    "MetadataMismatch",
    "MissingField",
    "NoRoute",
    "NotAuthorized",
    "NotFound",
    "NotWellFormed",
    "PatientNotIdentified",
    "PermanentDeliveryError",
    "ProcessNotAgreed",
    "ReadTimeout",
    "Refusal",
    "RequestError",
    "RevocationUnavailable",
    "SchemaInvalid",
    "SecurityError",
    "SignatureInvalid",
    "SpoofingDetected",
    "StoreError",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "UnexpectedError",
    "UnknownReceiver",
    "UnreadableEncoding",
    "UnsupportedEncoding",
    "UnsupportedMessage",
    "UnverifiedPacket",
    "all_error_classes",
]


#: the most characters an error's words hold; what a peer sent and an error quotes cannot make them larger
MAX_TEXT = 4000


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    event: ClassVar[str] = "gateway.error"
    retryable: ClassVar[bool] = False
    apprec_code: ClassVar[str | None] = None
    transport_condition: ClassVar[str | None] = None
    http_status: ClassVar[int] = 500
    #: what a peer is told instead of ``message`` when the class has fixed words for it
    public_text: ClassVar[str | None] = None

    def __init__(self, message: str, *, public: str | None = None) -> None:
        message = _bounded(message)  # the words may quote what a peer sent: never more than MAX_TEXT of them
        super().__init__(message)
        self.message = message
        #: the words for a peer (an AppRec's text, a transport refusal): no file path, no local detail
        self.public = _bounded(public or self.public_text or message)

    def describe(self) -> dict[str, str | None]:
        """The public shape of the error: KITH code, stable event code and the plain-words message."""
        return {"code": self.apprec_code, "event": self.event, "message": self.message}


# --- the message itself ------------------------------------------------------------------------------


class MessageError(GatewayError):
    """The message is wrong; the sender is told (negative AppRec or API 4xx) and nothing is retried."""

    event = "message.invalid"
    apprec_code: ClassVar[str | None] = "X99"
    transport_condition: ClassVar[str | None] = "transport:invalid-field-value"
    http_status = 422


class NotWellFormed(MessageError):
    event = "message.not_well_formed"
    apprec_code = "T01"
    transport_condition = "transport:not-well-formed-xml"
    http_status = 400


class ForbiddenMarkup(NotWellFormed):
    event = "message.forbidden_markup"


class MessageTooLarge(NotWellFormed):
    event = "message.too_large"
    http_status = 413


class UnreadableEncoding(NotWellFormed):
    event = "message.unreadable_encoding"
    transport_condition = "transport:invalid-encoding"


class SchemaInvalid(MessageError):
    event = "message.schema_invalid"
    apprec_code = "T02"
    transport_condition = "transport:not-well-formed-xml"


class MissingField(MessageError):
    event = "message.missing_field"
    apprec_code = "T02"
    transport_condition = "transport:required-field-missing"


class UnsupportedMessage(MessageError):
    event = "message.unsupported_kind"
    apprec_code = "T10"
    transport_condition = "transport:unsupported-message"


class ProcessNotAgreed(UnsupportedMessage):
    """The CPA between the sender and us does not let the sender send this kind of message (HITS 1216:
    ``transport:unsupported-message``); told on the bus before anything is decrypted."""

    event = "transport.process_not_agreed"


class InvalidMsgId(MessageError):
    event = "message.invalid_msgid"
    apprec_code = "E10"


class ImplausibleDate(MessageError):
    event = "message.implausible_date"
    apprec_code = "X99"


class UnknownReceiver(MessageError):
    event = "message.unknown_receiver"
    apprec_code = "E21"


class PatientNotIdentified(MessageError):
    event = "message.patient_not_identified"
    apprec_code = "E36"

    def __init__(self, message: str, *, details: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        # the more specific KITH codes (E30 FNR missing, E31 FNR wrong, E32 name missing) sent beside E36
        self.details = details


class MetadataMismatch(MessageError):
    event = "message.metadata_mismatch"
    apprec_code = "E10"


# --- protection and trust ----------------------------------------------------------------------------


class SecurityError(GatewayError):
    """CMS protection or certificate trust failed."""

    event = "security.error"
    apprec_code: ClassVar[str | None] = "S99"
    transport_condition: ClassVar[str | None] = "transport:invalid-cms-pkcs"
    http_status = 422
    #: a coarse cause in fixed words for the log (never anything read from decrypted bytes)
    reason: str = ""
    #: raised after a private key was used on the packet: before its signature verified, what failed
    #: then must not be told apart, not even in the log (it would tell a good CBC padding from a bad one)
    key_used: bool = False


class UnverifiedPacket(SecurityError):
    """A packet that could not be decrypted and verified as signed by its claimed sender's registered
    certificate. The peer hears this one answer whatever the cause was - a decryption failure, a
    signature that does not verify, a signer that is not the sender, a packet that is not CMS - because
    telling those apart would let anyone who changes captured ciphertext learn its plaintext (AES-CBC has
    no integrity of its own). The cause goes to the log only."""

    event = "security.unverified_packet"
    apprec_code = None
    transport_condition = "transport:invalid-cms-pkcs"
    #: the event code of the underlying failure (security.decryption_failed, ...), for the log only
    cause: str = ""

    def __init__(self) -> None:
        super().__init__("The packet could not be decrypted and verified as signed by its sender.")


class SignatureInvalid(SecurityError):
    event = "security.signature_invalid"
    apprec_code = "S01"
    transport_condition = "transport:invalid-signature"


class CertificateInvalid(SecurityError):
    event = "security.certificate_invalid"
    apprec_code = "S02"
    transport_condition = "transport:invalid-certificate"


class CertificateExpired(CertificateInvalid):
    event = "security.certificate_expired"
    transport_condition = "transport:expired-certificate"


class CertificateKeyUsage(CertificateInvalid):
    event = "security.certificate_key_usage"


class CertificateUntrusted(CertificateInvalid):
    event = "security.certificate_untrusted"


class CertificateRevoked(SecurityError):
    event = "security.certificate_revoked"
    apprec_code = "S03"
    transport_condition = "transport:revoked-certificate"


class RevocationUnavailable(SecurityError):
    """The revocation status cannot be had now; the message waits and is tried again."""

    public_text = "The revocation status of the signer's certificate cannot be had now; try again later."
    event = "security.revocation_offline"
    retryable = True
    apprec_code = None
    transport_condition = "transport:revoked-certificate-offline"
    http_status = 503


class DecryptionFailed(SecurityError):
    """Every decryption failure looks the same to the peer, whatever the cause."""

    event = "security.decryption_failed"
    apprec_code = None
    transport_condition = "transport:decryption-failed"


class InvalidCms(SecurityError):
    event = "security.invalid_cms"
    apprec_code = None
    transport_condition = "transport:invalid-cms-pkcs"


class KeyUnavailable(SecurityError):
    """This gateway lacks a key or certificate it needs. Nothing is wrong with the message: it waits
    (and the peer keeps its packet) while an operator puts the key in place."""

    public_text = "This gateway cannot open packets for that receiver now; keep the packet and try again later."
    event = "security.key_unavailable"
    retryable = True
    apprec_code = None
    transport_condition = "transport:internal-error"
    http_status = 503


class SpoofingDetected(SecurityError):
    """The signer is not the sender the message or its transport metadata claims."""

    #: the party whose registered certificate verifiably made the signature, when one did
    signed_by: str | None = None
    event = "security.spoofing_attack"
    apprec_code = None
    transport_condition = "abuse:spoofing-attack"
    http_status = 403


# --- transports --------------------------------------------------------------------------------------


class DeliveryError(GatewayError):
    event = "delivery.error"
    http_status = 502


class TransportError(DeliveryError):
    """The packet did not get through this time; try again later - no sooner than ``retry_after_s`` when
    the peer said when (HTTP ``Retry-After``). ``route_failure``: the route (the receiver) failed, and its
    circuit breaker counts it; False where the fault is this gateway's own standing with the network, which
    no receiver's breaker should pay for and which uses up no attempts (only the delivery's time to live)."""

    event = "delivery.transport_error"
    retryable = True
    route_failure: ClassVar[bool] = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotAuthorized(TransportError):
    """The peer's network does not let this gateway act for that HER-id (NHN's 403 "Not authorized for
    HerId(s)"): a configuration an operator must fix - in HelseID's delegation or the Adresseregister.
    Retried, so messages flow again once it is fixed; logged as an error."""

    event = "delivery.not_authorized"
    route_failure = False


class ChannelLocked(TransportError):
    """Another client holds the channel for one of our HER-ids (NHN's 423 Locked: another HelseID client
    has the HER-id's configuration locked): what that HER-id sends waits - an operator decides which client
    is to serve it. The rest of the region's HER-ids go on."""

    event = "delivery.channel_locked"
    route_failure = False


class AuthenticationRefused(TransportError):
    """HelseID refused this gateway's client (``invalid_client``, a clock out of step, an unknown key), or
    NHN refused its access token twice: only an operator can fix it. Retried, so the messages wait and flow
    again once it is fixed - never dead letters for a credential problem."""

    event = "delivery.authentication_refused"
    route_failure = False


class PermanentDeliveryError(DeliveryError):
    """The peer refused the packet for good; trying again cannot help."""

    event = "delivery.refused"

    def __init__(self, message: str, *, apprec_code: str | None = None, condition: str | None = None) -> None:
        super().__init__(message)
        # a peer may tell us why (its AppRec code / transport condition); keep it for the trace
        self.peer_code = apprec_code
        self.peer_condition = condition


class NoRoute(PermanentDeliveryError):
    event = "delivery.no_route"


# --- synchronous request/reply (Helsenorge's _sync/_syncreply queues) ----------------------------------


class SyncError(DeliveryError):
    """A synchronous request that got no usable answer; the EHR that asked is told at once (nothing is
    queued: a caller waits for a synchronous answer, and one that comes later is of no use)."""

    event = "sync.error"
    http_status = 502


class SyncNotSupported(SyncError):
    """The receiver is reached over a channel with no synchronous request/reply."""

    event = "sync.not_supported"
    http_status = 422


class SyncTimeout(SyncError):
    """No answer within the call's time (15 s on Helsenorge's bus)."""

    event = "sync.timeout"
    http_status = 504


class SyncRefused(SyncError):
    """The receiver reported the request on our error queue, with its transport condition."""

    event = "sync.refused"

    def __init__(self, message: str, *, condition: str) -> None:
        super().__init__(message)
        self.peer_condition = condition


class SyncReplyInvalid(SyncError):
    """The answer does not verify, is not a valid KITH message, or is not from the party asked."""

    event = "sync.reply_invalid"


class SyncUnanswerable(GatewayError):
    """A synchronous request this gateway's party cannot answer: it has no EHR endpoint for them, or its
    EHR failed or gave no valid answer in time. The requester is told on its error queue."""

    event = "sync.unanswerable"
    transport_condition = "transport:internal-error"
    http_status = 502


class SyncNotOffered(SyncUnanswerable):
    """The local party takes no synchronous requests (no ``sync_url`` in the register)."""

    event = "sync.not_offered"
    transport_condition = "transport:unsupported-message"


# --- API, config, store ------------------------------------------------------------------------------


class RequestError(GatewayError):
    event = "api.bad_request"
    http_status = 400


class BadRequest(RequestError):
    pass


class Unauthorized(RequestError):
    event = "api.unauthorized"
    http_status = 401


class Forbidden(RequestError):
    event = "api.forbidden"
    http_status = 403


class NotFound(RequestError):
    event = "api.not_found"
    http_status = 404


class Conflict(RequestError):
    event = "api.conflict"
    http_status = 409


class Refusal(RequestError):
    """A request refused by a limit of the HTTP service, or whose body did not arrive whole. Logged as one
    line at ``level`` (never with a traceback or anything the client sent), answered with ``headers()``."""

    level: ClassVar[Literal["info", "warning"]] = "warning"

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}


class TooManyRequests(Refusal):
    event = "api.too_many_requests"
    http_status = 429


class Busy(Refusal):
    event = "api.busy"
    http_status = 503
    retryable = True


class ReadTimeout(Refusal):
    event = "api.read_timeout"
    http_status = 408


class UnsupportedEncoding(Refusal):
    event = "api.unsupported_encoding"
    http_status = 415

    def headers(self) -> dict[str, str]:
        return {"Accept-Encoding": "identity"}  # RFC 7694: what the client may use instead


class BadBody(Refusal):
    event = "api.bad_body"


class ClientGone(Refusal):
    """The client closed the connection before its body arrived: nobody is left to answer."""

    event = "api.client_disconnected"
    level = "info"


class ConfigError(GatewayError):
    event = "config.invalid"


class UnexpectedError(GatewayError):
    """An exception that is not the gateway's own: a bug or a library's surprise. Retried, never told to
    a sender, and logged with its traceback."""

    public_text = "This gateway could not take the packet now; try again later."
    event = "gateway.unexpected"
    retryable = True


class StoreError(GatewayError):
    public_text = "This gateway cannot store the packet now; try again later."
    event = "store.error"
    retryable = True
    http_status = 503


def all_error_classes() -> list[type[GatewayError]]:
    """Every error class of the tree, root first (for the error-code catalogue and its test)."""
    seen: list[type[GatewayError]] = []
    stack: list[type[GatewayError]] = [GatewayError]
    while stack:
        cls = stack.pop(0)
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return seen

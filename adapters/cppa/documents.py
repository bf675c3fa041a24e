"""ebXML CPPA 2.0 documents as NHN's CPPA service gives them: a CPP (``Profiles/{herId}``) and a CPA
(``Agreements/HerIds/{a}/{b}``) read into frozen values - for each party its HER-id, its AMQP queues, its
signing and encryption certificates and the processes it can send and receive.

Read with the gateway's one hardened parser (gateway/xml.py: no DTD, no entity, nothing opened, a size cap),
so a document is as untrusted as a message. What is wrong with one is a :class:`CppaDocumentError` that says
what, never an lxml traceback; NHN's "nothing here" placeholder (an empty root with ``xsi:nil="true"``, the
SOAP-era answer for a HER-id without a CPP) is a :class:`CppaNoDocument`.

Which certificate signs and which encrypts: NHN's documents name them ``certId="sign"`` and ``"enc"`` (or
``"enc_cert_<her>"``), and every reference in them - ``ApplicationCertificateRef`` and the ebXML
``SigningCertificateRef`` alike - points at the encryption certificate, so neither the names nor the
references tell reliably (one of Helsenorge.Messaging's own test CPAs carries a signing certificate under
``certId="enc"``). As Helsenorge.Messaging does, the certificate's key usage decides: keyEncipherment is
for encryption, nonRepudiation for signing. Only a certificate without a key usage extension is taken by
its certId's name (``sign...`` / ``enc...``).

Queues: each ``DeliveryChannel`` whose ``Transport`` receives over AMQP gives the queue named by its
``Endpoint@uri`` (the part after the last ``/``); the queue's suffix (``_async``, ``_sync``, ``_error``)
says which it is, else the channel id (``AMQPAsync_...``, ``AMQPSync_...``), else an endpoint of
``type="error"``. The party's default channel wins where two differ.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from cryptography import x509
from lxml import etree

from adapters.amqp.fields import queue_name
from gateway.errors import ConfigError, GatewayError
from gateway.registry import is_her_id
from gateway.security.certs import CertRef
from gateway.xml import localname, namespace, parse

__all__ = [
    "CPPA_NS",
    "MAX_DOCUMENT_BYTES",
    "Agreement",
    "CppaDocumentError",
    "CppaNoDocument",
    "DocumentCertificate",
    "Party",
    "Profile",
    "Purpose",
    "Queues",
    "Role",
    "parse_agreement",
    "parse_profile",
]

CPPA_NS: Final = "http://www.oasis-open.org/committees/ebxml-cppa/schema/cpp-cpa-2_0.xsd"
_DSIG: Final = "http://www.w3.org/2000/09/xmldsig#"
_XSI_NIL: Final = "{http://www.w3.org/2001/XMLSchema-instance}nil"
#: the largest document read; NHN's CPAs are a few hundred KiB
MAX_DOCUMENT_BYTES: Final = 4 * 1024 * 1024
#: a CPA id as it may go out in an AMQP application property
_CPA_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")

Purpose = Literal["signing", "encryption"]
QueueKind = Literal["async", "sync", "error"]
_SUFFIXES: Final[tuple[tuple[str, QueueKind], ...]] = (("_async", "async"), ("_sync", "sync"), ("_error", "error"))


class CppaDocumentError(ConfigError):
    """A CPP or CPA that cannot be used: not XML, hostile markup, over the size cap, not CPPA 2.0, or
    missing what the gateway needs (a HER-id, a cpaid, readable certificates). Asking again will not help."""

    event = "cppa.document_invalid"


class CppaNoDocument(CppaDocumentError):
    """The service's placeholder for "no such document" (an empty root with ``xsi:nil="true"``)."""

    event = "cppa.no_document"


def _q(name: str) -> str:
    return f"{{{CPPA_NS}}}{name}"


@dataclass(frozen=True)
class Queues:
    """A party's AMQP queues (short names, e.g. ``93238_async``); None where its document names none."""

    asynchronous: str | None = None
    synchronous: str | None = None
    error: str | None = None

    @classmethod
    def defaults(cls, her_id: str) -> Queues:
        """The queues NHN creates for every party on the Tjenestebuss: ``<her>_async``, ``_sync``, ``_error``."""
        return cls(f"{her_id}_async", f"{her_id}_sync", f"{her_id}_error")

    def or_defaults(self, her_id: str) -> Queues:
        """These queues, each one the document does not name filled in with the default."""
        default = Queues.defaults(her_id)
        return Queues(
            self.asynchronous or default.asynchronous,
            self.synchronous or default.synchronous,
            self.error or default.error,
        )


@dataclass(frozen=True)
class DocumentCertificate:
    """One ``Certificate`` element: its certId, DER bytes and what its key usage allows."""

    cert_id: str
    der: bytes = field(repr=False)
    purposes: frozenset[Purpose]


@dataclass(frozen=True)
class Role:
    """One ``CollaborationRole``: a process (``ProcessSpecification@name``), the party's role in it, the
    service, and the actions the party can send and receive in it."""

    process: str
    version: str | None
    role: str | None
    service: str | None
    sends: tuple[str, ...] = ()
    receives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Party:
    """One ``PartyInfo``. ``name`` is the party's name: shown to operators, never logged."""

    her_id: str
    name: str = field(repr=False)
    queues: Queues
    signing: CertRef | None = field(repr=False)
    encryption: CertRef | None = field(repr=False)
    certificates: tuple[DocumentCertificate, ...] = field(default=(), repr=False)
    roles: tuple[Role, ...] = field(default=(), repr=False)

    @property
    def processes(self) -> tuple[str, ...]:
        """The processes the party takes part in, each once, in document order."""
        return tuple(dict.fromkeys(role.process for role in self.roles))

    def can_send(self, action: str) -> bool:
        return any(action.upper() == sent.upper() for role in self.roles for sent in role.sends)

    def can_receive(self, action: str) -> bool:
        return any(action.upper() == got.upper() for role in self.roles for got in role.receives)


@dataclass(frozen=True)
class Profile:
    """A CPP: one party's profile."""

    cpp_id: str | None
    party: Party


@dataclass(frozen=True)
class Agreement:
    """A CPA: the agreement between two parties."""

    cpa_id: str
    parties: tuple[Party, Party]

    def party(self, her_id: str) -> Party | None:
        return next((p for p in self.parties if int(p.her_id) == int(her_id)), None)

    def counterparty(self, my_her_id: str) -> Party | None:
        """The other party of the agreement, or None when ``my_her_id`` is not one of its parties."""
        if self.party(my_her_id) is None:
            return None
        return next(p for p in self.parties if int(p.her_id) != int(my_her_id))


def parse_profile(data: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Profile:
    """A CPP from the service's bytes, or :class:`CppaDocumentError` saying what is wrong with it."""
    root = _root(data, "CollaborationProtocolProfile", "CPP", max_bytes)
    info = root.find(_q("PartyInfo"))
    if info is None:
        raise CppaDocumentError("The CPP has no PartyInfo.")
    cpp_id = _attr(root, "cppid")
    return Profile(cpp_id=cpp_id, party=_party(info, "the CPP"))


def parse_agreement(data: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Agreement:
    """A CPA from the service's bytes, or :class:`CppaDocumentError` saying what is wrong with it."""
    root = _root(data, "CollaborationProtocolAgreement", "CPA", max_bytes)
    cpa_id = _attr(root, "cpaid")
    if not cpa_id or not _CPA_ID.fullmatch(cpa_id):  # it travels as the AMQP property cpaId: nothing odd in it
        raise CppaDocumentError("The CPA has no cpaid, or one that is not 1 to 100 of A-Z a-z 0-9 _ . : -.")
    infos = root.findall(_q("PartyInfo"))
    if len(infos) != 2:
        raise CppaDocumentError(f"A CPA has two PartyInfo elements; this one has {len(infos)}.")
    first, second = (_party(info, f"CPA {cpa_id}") for info in infos)
    if int(first.her_id) == int(second.her_id):
        raise CppaDocumentError(f"Both parties of CPA {cpa_id} have HER-id {first.her_id}.")
    return Agreement(cpa_id=cpa_id, parties=(first, second))


def _root(data: bytes, expected: str, what: str, max_bytes: int) -> etree._Element:
    try:
        root = parse(data, max_bytes=max_bytes).root
    except GatewayError as exc:
        raise CppaDocumentError(f"The {what} could not be read: {exc.message}") from exc
    if root.get(_XSI_NIL) in ("true", "1") and len(root) == 0:
        raise CppaNoDocument(f"The service answered that there is no {what} (an empty, nil document).")
    if namespace(root) != CPPA_NS or localname(root) != expected:
        raise CppaDocumentError(
            f"The {what} is not an ebXML CPPA 2.0 {expected}: its root is {localname(root)[:80]!r} "
            f"in namespace {namespace(root)[:120]!r}."
        )
    return root


def _attr(element: etree._Element, name: str) -> str | None:
    """An attribute, qualified (``tns:certId``, as CPPA 2.0 has them) or not; stripped, None when empty."""
    value = element.get(_q(name))
    if value is None:
        value = element.get(name)
    value = (value or "").strip()
    return value or None


def _party(info: etree._Element, where: str) -> Party:
    her_ids = [
        (pid.text or "").strip() for pid in info.iterfind(_q("PartyId")) if (_attr(pid, "type") or "").upper() == "HER"
    ]
    if len(her_ids) != 1 or not is_her_id(her_ids[0]):
        raise CppaDocumentError(f'A PartyInfo of {where} does not name one HER-id (PartyId type="HER").')
    her_id = her_ids[0]
    source = f"{where}, party HER-id {her_id}"
    certificates = tuple(_certificate(element, source) for element in info.iterfind(_q("Certificate")))
    return Party(
        her_id=her_id,
        name=_attr(info, "partyName") or "",
        queues=_queues(info, source),
        signing=_first(certificates, "signing", source),
        encryption=_first(certificates, "encryption", source),
        certificates=certificates,
        roles=tuple(_roles(info)),
    )


def _certificate(element: etree._Element, source: str) -> DocumentCertificate:
    cert_id = _attr(element, "certId") or ""
    encoded = element.findtext(f".//{{{_DSIG}}}X509Certificate")
    if not cert_id or not encoded:
        raise CppaDocumentError(f"A Certificate of {source} has no certId or no ds:X509Certificate.")
    try:
        der = base64.b64decode("".join(encoded.split()), validate=True)
        cert = x509.load_der_x509_certificate(der)
        cert.public_key()  # a key type cryptography cannot load is refused here, not when the key is used
        purposes = _purposes(cert, cert_id)
    except Exception as exc:  # binascii.Error, cryptography's refusals (ValueError, DuplicateExtension, ...)
        raise CppaDocumentError(
            f"Certificate {cert_id[:60]!r} of {source} is not a DER X.509 certificate: {str(exc)[:200]}"
        ) from exc
    return DocumentCertificate(cert_id=cert_id, der=der, purposes=purposes)


def _purposes(cert: x509.Certificate, cert_id: str) -> frozenset[Purpose]:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        lowered = cert_id.lower()
        if lowered.startswith("sign"):
            return frozenset({"signing"})
        return frozenset({"encryption"}) if lowered.startswith("enc") else frozenset()
    purposes: set[Purpose] = set()
    if usage.key_encipherment:
        purposes.add("encryption")
    if usage.content_commitment:  # nonRepudiation
        purposes.add("signing")
    return frozenset(purposes)


def _first(certificates: Iterable[DocumentCertificate], purpose: Purpose, source: str) -> CertRef | None:
    for certificate in certificates:
        if purpose in certificate.purposes:
            return CertRef(x509.load_der_x509_certificate(certificate.der), f"{source}, certId {certificate.cert_id}")
    return None


def _queues(info: etree._Element, source: str) -> Queues:
    transports = {_attr(t, "transportId"): t for t in info.iterfind(_q("Transport"))}
    default_channel = _attr(info, "defaultMshChannelId")
    found: dict[QueueKind, str] = {}
    for channel in info.iterfind(_q("DeliveryChannel")):
        channel_id = _attr(channel, "channelId") or ""
        transport = transports.get(_attr(channel, "transportId"))
        receiver = transport.find(_q("TransportReceiver")) if transport is not None else None
        if receiver is None or (receiver.findtext(_q("TransportProtocol")) or "").strip().upper() != "AMQP":
            continue
        for endpoint in receiver.iterfind(_q("Endpoint")):
            uri = _attr(endpoint, "uri")
            if not uri:
                continue
            try:
                queue = queue_name(uri)
            except ValueError as exc:
                raise CppaDocumentError(f"An AMQP endpoint of {source} names no usable queue: {exc}") from exc
            kind = _queue_kind(queue, channel_id, _attr(endpoint, "type"))
            if kind is not None and (kind not in found or channel_id == default_channel):
                found[kind] = queue
    return Queues(found.get("async"), found.get("sync"), found.get("error"))


def _queue_kind(queue: str, channel_id: str, endpoint_type: str | None) -> QueueKind | None:
    lowered = queue.lower()
    if lowered.endswith("_syncreply"):
        return None  # a requester's reply queue, not one to send to
    for suffix, kind in _SUFFIXES:
        if lowered.endswith(suffix):
            return kind
    channel = channel_id.lower()
    if "async" in channel:
        return "async"
    if "sync" in channel:
        return "sync"
    if "error" in channel or (endpoint_type or "").lower() == "error":
        return "error"
    return None


def _roles(info: etree._Element) -> Iterable[Role]:
    for element in info.iterfind(_q("CollaborationRole")):
        spec = element.find(_q("ProcessSpecification"))
        process = _attr(spec, "name") if spec is not None else None
        if not process:
            continue
        role = element.find(_q("Role"))
        binding = element.find(_q("ServiceBinding"))
        service = (binding.findtext(_q("Service")) or "").strip() if binding is not None else ""

        def actions(kind: str, binding: etree._Element | None = binding) -> tuple[str, ...]:
            if binding is None:
                return ()
            bindings = binding.iterfind(f"{_q(kind)}/{_q('ThisPartyActionBinding')}")
            return tuple(action for action in (_attr(b, "action") for b in bindings) if action)

        yield Role(
            process=process,
            version=_attr(spec, "version") if spec is not None else None,
            role=_attr(role, "name") if role is not None else None,
            service=service or None,
            sends=actions("CanSend"),
            receives=actions("CanReceive"),
        )

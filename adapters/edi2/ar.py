"""The Adresseregister client: who a HER-id outside the region is, as NHN's register says.

An EHR in the region may write to any HER-id in Norway (the ``edi2`` default route). The gateway asks NHN's
Adresseregister (AR) about such a receiver before it accepts the message, so that a HER-id that does not
exist, is not active or cannot receive messages is refused at submit with E21 and the register's answer
(:func:`refusal`) instead of coming back later as NHN's rejection - and so operators see the party's name.

The call is SOAP 1.2 ``GetCommunicationPartyDetails(herId)`` of NHN's CommunicationPartyService with HTTP
Basic auth and the WS-Addressing headers the Java (CXF) client sends (``Action``, ``MessageID``, ``To``, an
anonymous ``ReplyTo``). The answer is read with the gateway's hardened parser (no DTD, no entity, nothing
opened). A party is cached for ``ttl_s`` (the register changes rarely; a request per message would put NHN's
latency into every submit), "not found" for the shorter ``negative_ttl_s`` (a party registered right now
shows up soon); concurrent lookups of one HER-id share one request; failures are never cached.

Failures: no connection, a timeout, HTTP 408/429/5xx without a SOAP fault, or a SOAP ``Receiver`` fault (the
service's own trouble) are a retryable :class:`~gateway.errors.TransportError`. HTTP 401/403, any other SOAP
fault, or an answer that is not the party asked for (one the parser refuses included) are an
:class:`AddressRegisterError` naming the fault code: asking again cannot help. The credentials are never in
an error or ``repr``; this module logs nothing.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import aiohttp
from lxml import etree
from yarl import URL

from adapters.bodies import read_body
from gateway.errors import ConfigError, GatewayError, TransportError, UnknownReceiver
from gateway.registry import is_her_id
from gateway.transport import retryable_status
from gateway.xml import parse, serialize

__all__ = [
    "ACTION",
    "NHN_PROD_URL",
    "NHN_TEST_URL",
    "AddressRegister",
    "AddressRegisterError",
    "CommunicationParty",
    "Kind",
    "refusal",
]

NHN_TEST_URL: Final = "https://ws-web.test.nhn.no/v1/Ar"
NHN_PROD_URL: Final = "https://ws.nhn.no/v1/Ar"
_CP: Final = "http://register.nhn.no/CommunicationParty"
_COMMON: Final = "http://register.nhn.no/Common"
_SOAP: Final = "http://www.w3.org/2003/05/soap-envelope"
_WSA: Final = "http://www.w3.org/2005/08/addressing"
_NIL: Final = "{http://www.w3.org/2001/XMLSchema-instance}nil"
_TYPE: Final = "{http://www.w3.org/2001/XMLSchema-instance}type"
_OPERATION: Final = "GetCommunicationPartyDetails"
#: the WS-Addressing action (and SOAP 1.2 ``action`` parameter) of the operation, from NHN's WSDL
ACTION: Final = f"{_CP}/ICommunicationPartyService/{_OPERATION}"
_NOT_FOUND: Final = "InvalidHerIdSupplied"  # the GenericFault ErrorCode of "no such HER-id"
#: the largest answer read: an organisation's answer lists every service under it
_MAX_BYTES: Final = 16 * 1024 * 1024

Kind = Literal["Service", "Organization", "Person"]
# what <Type> says; the xsi:type says OrganizationPerson where <Type> says Person
_KINDS: Final[dict[str, Kind]] = {"Service": "Service", "Organization": "Organization", "Person": "Person"}


@dataclass(frozen=True)
class CommunicationParty:
    """One party as the Adresseregister describes it: what the gateway decides on or shows an operator."""

    her_id: str
    name: str
    kind: Kind
    active: bool
    is_valid_communication_party: bool
    parent_her_id: str | None
    parent_name: str | None
    #: (type code, address) in the register's order, e.g. ("E_EDI", "x@edi.nhn.no"), ("E_DS", "ldap://...")
    electronic_addresses: tuple[tuple[str, str], ...] = ()
    display_name: str | None = None
    organization_number: str | None = None

    @property
    def label(self) -> str:
        """How an operator knows the party: its name, under its parent's for a service or a person
        ("St. Olavs hospital HF / Laboratoriemedisin"), printable characters only and at most 200."""
        own = self.display_name or self.name
        full = f"{self.parent_name} / {own}" if self.parent_name and self.parent_name != own else own
        return "".join(c for c in full if c.isprintable())[:200]

    def addresses(self, type_code: str) -> tuple[str, ...]:
        """The party's addresses of one type (``E_EDI``, ``E_DS``, ``E_SB_ASYNC`` ...)."""
        return tuple(address for code, address in self.electronic_addresses if code == type_code)


class AddressRegisterError(ConfigError):
    """The Adresseregister cannot be used as configured: it refused the credentials, answered a SOAP fault
    other than "not found", or answered something that is not the party asked for. Asking again will not
    help until an operator acts; ``fault_code`` (``Sender`` ...) and ``error_code`` (NHN's GenericFault
    code) say what the register said, when it said anything."""

    def __init__(self, message: str, *, fault_code: str | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.fault_code = fault_code
        self.error_code = error_code


def refusal(her_id: str, party: CommunicationParty | None) -> str | None:
    """Why a message to ``her_id`` must be refused with E21, in plain words - or None when it may be sent.
    The party's name stays out: it may be a person's, and these words reach logs and AppRecs."""
    if party is None:
        return f"HER-id {her_id} is not in the Adresseregister"
    if not party.active:
        return f"HER-id {her_id} is not active in the Adresseregister"
    if not party.is_valid_communication_party:
        return f"HER-id {her_id} is not a valid communication party in the Adresseregister: it cannot receive messages"
    return None


class AddressRegister:
    """A cached ``GetCommunicationPartyDetails`` client; the caller owns ``session`` and closes it."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        session: aiohttp.ClientSession,
        ttl_s: float = 3600,
        negative_ttl_s: float = 300,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 10,
        max_entries: int = 10_000,
    ) -> None:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError("The Adresseregister URL must be an http(s) URL, e.g. " + NHN_TEST_URL + ".")
        if parsed.user is not None or parsed.password is not None:
            # said without the URL: it holds the secret
            raise ConfigError("The Adresseregister URL carries credentials; give them as username and password.")
        if ":" in username:
            raise ConfigError("The Adresseregister username cannot hold a colon (HTTP Basic auth, RFC 7617).")
        self._url = url
        basic = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._headers = {
            "Authorization": f"Basic {basic}",
            "Content-Type": f'application/soap+xml; charset=utf-8; action="{ACTION}"',
        }
        self._session = session
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_entries = max(1, max_entries)
        self._cache: dict[str, tuple[float, CommunicationParty | None]] = {}  # HER-id -> (expires, answer)
        self._pending: dict[str, asyncio.Future[CommunicationParty | None]] = {}

    def __repr__(self) -> str:
        return f"AddressRegister({self._url!r})"

    async def lookup(self, her_id: str) -> CommunicationParty | None:
        """The party registered under ``her_id``, or None when the register has none."""
        if not isinstance(her_id, str) or not is_her_id(her_id):
            raise UnknownReceiver(f"{str(her_id)[:40]!r} is not a HER-id (1 to 12 digits).")
        cached = self._cache.get(her_id)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        pending = self._pending.get(her_id)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh(her_id))
            self._pending[her_id] = pending
            pending.add_done_callback(functools.partial(self._settled, her_id))
        # shielded: one caller giving up does not cancel the answer the others wait for
        return await asyncio.shield(pending)

    def _settled(self, her_id: str, future: asyncio.Future[CommunicationParty | None]) -> None:
        if self._pending.get(her_id) is future:
            del self._pending[her_id]
        if not future.cancelled():
            future.exception()  # retrieved here: when every waiter has gone, asyncio need not complain

    async def _refresh(self, her_id: str) -> CommunicationParty | None:
        party = await self._ask(her_id)
        expires = self._clock() + (self._ttl_s if party is not None else self._negative_ttl_s)
        self._cache.pop(her_id, None)
        while len(self._cache) >= self._max_entries:  # bounded: HER-ids come from the EHRs; the oldest goes
            del self._cache[next(iter(self._cache))]
        self._cache[her_id] = (expires, party)
        return party

    async def _ask(self, her_id: str) -> CommunicationParty | None:
        try:
            async with self._session.post(
                self._url,
                data=_request(her_id, self._url),
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
                raise_for_status=False,
            ) as resp:
                status = resp.status
                body = await read_body(resp.content, _MAX_BYTES)
                if body is None:
                    raise AddressRegisterError(
                        f"The Adresseregister's answer is over {_MAX_BYTES} bytes; it was not read."
                    )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(
                f"The Adresseregister at {self._url} did not answer: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from exc
        return _answer(her_id, status, body, self._url)


def _request(her_id: str, to: str) -> bytes:
    envelope = etree.Element(f"{{{_SOAP}}}Envelope", nsmap={"s": _SOAP, "a": _WSA})
    header = etree.SubElement(envelope, f"{{{_SOAP}}}Header")
    etree.SubElement(header, f"{{{_WSA}}}Action").text = ACTION
    etree.SubElement(header, f"{{{_WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
    etree.SubElement(header, f"{{{_WSA}}}To").text = to
    reply_to = etree.SubElement(header, f"{{{_WSA}}}ReplyTo")
    etree.SubElement(reply_to, f"{{{_WSA}}}Address").text = f"{_WSA}/anonymous"
    body = etree.SubElement(envelope, f"{{{_SOAP}}}Body")
    operation = etree.SubElement(body, f"{{{_CP}}}{_OPERATION}", nsmap={None: _CP})
    etree.SubElement(operation, f"{{{_CP}}}herId").text = her_id
    return serialize(envelope)


def _answer(her_id: str, status: int, body: bytes, where: str) -> CommunicationParty | None:
    """What an HTTP answer means. A fault is read whatever the status: WCF sends faults with HTTP 500."""
    retryable = retryable_status(status)
    if status in (401, 403):
        raise AddressRegisterError(
            f"The Adresseregister at {where} refused this gateway's username and password (HTTP {status}); "
            "check the credentials it is configured with."
        )
    body_element, refused = None, None
    try:
        envelope = parse(body, max_bytes=_MAX_BYTES).root
        body_element = envelope.find(f"{{{_SOAP}}}Body") if envelope.tag == f"{{{_SOAP}}}Envelope" else None
    except GatewayError as exc:
        refused = exc
    fault = body_element.find(f"{{{_SOAP}}}Fault") if body_element is not None else None
    if fault is not None:
        _unless_not_found(her_id, fault)
        return None
    if retryable:
        raise TransportError(f"The Adresseregister at {where} answered HTTP {status}.") from refused
    if refused is not None:
        raise AddressRegisterError(f"The Adresseregister's answer was refused unread: {refused.message}") from refused
    path = f"{{{_CP}}}{_OPERATION}Response/{{{_CP}}}{_OPERATION}Result"
    result = body_element.find(path) if body_element is not None else None
    if status != 200 or result is None:
        raise AddressRegisterError(f"The Adresseregister's answer (HTTP {status}) is not a {_OPERATION} response.")
    if result.get(_NIL) == "true":
        return None
    party = _party(result)
    if int(party.her_id) != int(her_id):
        raise AddressRegisterError(f"Asked for HER-id {her_id}, the Adresseregister answered for {party.her_id}.")
    return party


def _unless_not_found(her_id: str, fault: etree._Element) -> None:
    """Raise what a SOAP fault means, unless it says "no such HER-id"."""
    code = _qname(fault.find(f"{{{_SOAP}}}Code/{{{_SOAP}}}Value"))
    subcode = _qname(fault.find(f"{{{_SOAP}}}Code/{{{_SOAP}}}Subcode/{{{_SOAP}}}Value"))
    error_code = _clean(fault.findtext(f"{{{_SOAP}}}Detail/{{{_COMMON}}}GenericFault/{{{_COMMON}}}ErrorCode"))
    if error_code == _NOT_FOUND:
        return
    reason = (_clean(fault.findtext(f"{{{_SOAP}}}Reason/{{{_SOAP}}}Text")) or "no reason given")[:300]
    said = "/".join(part for part in (code or "?", subcode, error_code) if part)
    if code == "Receiver":
        raise TransportError(f"The Adresseregister failed to look up HER-id {her_id}: SOAP fault {said}: {reason}")
    raise AddressRegisterError(
        f"The Adresseregister refused to look up HER-id {her_id}: SOAP fault {said}: {reason}",
        fault_code=code,
        error_code=error_code,
    )


def _party(result: etree._Element) -> CommunicationParty:
    def text(name: str) -> str | None:
        element = result.find(f"{{{_CP}}}{name}")  # direct children: nested services have their own
        if element is None or element.get(_NIL) == "true":
            return None
        return _clean(element.text)

    her_id = text("HerId")
    declared = (result.get(_TYPE) or "").rpartition(":")[2]
    kind = _KINDS.get(text("Type") or "") or _KINDS.get("Person" if declared == "OrganizationPerson" else declared)
    if her_id is None or not is_her_id(her_id) or kind is None:
        raise AddressRegisterError("The Adresseregister's answer names no HER-id or no known party type.")
    parent = text("ParentHerId")
    organization_number = text("OrganizationNumber")
    addresses = []
    for element in result.iterfind(f"{{{_CP}}}ElectronicAddresses/{{{_COMMON}}}ElectronicAddress"):
        code = _clean(element.findtext(f"{{{_COMMON}}}TypeCodeValue"))
        code = code or _clean(element.findtext(f"{{{_COMMON}}}Type/{{{_COMMON}}}CodeValue"))
        address = _clean(element.findtext(f"{{{_COMMON}}}Address"))
        if code and address:
            addresses.append((code, address))
    return CommunicationParty(
        her_id=her_id,
        name=text("Name") or text("DisplayName") or "",
        kind=kind,
        active=_boolean(text("Active")),
        is_valid_communication_party=_boolean(text("IsValidCommunicationParty")),
        parent_her_id=parent if parent and is_her_id(parent) else None,  # -1: no parent
        parent_name=text("ParentName"),
        electronic_addresses=tuple(addresses),
        display_name=text("DisplayName"),
        organization_number=organization_number if organization_number != "-1" else None,
    )


def _boolean(value: str | None) -> bool:
    return value in ("true", "1")  # xs:boolean; absent is false, so a party is never taken on a guess


def _clean(value: str | None) -> str | None:
    """Text with its white space collapsed (the register wraps long addresses over lines), or None."""
    cleaned = " ".join((value or "").split())
    return cleaned or None


def _qname(element: etree._Element | None) -> str | None:
    """A fault code's local name when it is in the SOAP namespace (``s:Sender`` -> ``Sender``), else as said."""
    value = _clean(element.text if element is not None else None)
    if element is None or value is None:
        return None
    prefix, _, local = value.rpartition(":")
    return local if element.nsmap.get(prefix or None) == _SOAP else value

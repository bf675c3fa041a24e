"""A stand-in for NHN's Adresseregister (CommunicationPartyService), for tests and the NHN simulator.

It answers ``POST /v1/Ar`` (the path of NHN's test and production endpoints) as the register does, from
the responses NHN's client libraries test against (``../shared/standards/nhn/ar/ks-*.xml``): a known
HER-id's file, the "not found" SOAP fault for every other HER-id. The files are read from ``../shared``
when the app is made and never copied into the project: their licences stay with them there.

Like the real service it wants HTTP Basic auth (401 without it), a SOAP 1.2 request
(``application/soap+xml``; 415 otherwise) carrying the WS-Addressing ``Action`` of the operation and a
``MessageID``, and it answers every fault with HTTP 500, as WCF does. The SOAP names are written out here
again rather than imported from the client (adapters/edi2/ar.py): a wrong name in the client must fail
the tests, not be shared by both sides.

The SiO region's remote parties (St. Olavs' departments and lab) are not in NHN's files.
:func:`region_parties` makes :class:`SyntheticParty` entries for them from the region's register, and
:func:`render_party` answers for one in the shape of the service fixture, read from ``../shared`` at run
time with the HER-id, name, parent and flags put in.
"""

from __future__ import annotations

import base64
import copy
import functools
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web
from lxml import etree

from gateway.config import PROJECT_ROOT
from gateway.errors import GatewayError
from gateway.registry import Register
from gateway.xml import parse

__all__ = [
    "AR_PATH",
    "REQUESTS",
    "SyntheticParty",
    "add_party",
    "ar_app",
    "ar_dir",
    "fixture_parties",
    "region_parties",
    "render_party",
]

AR_PATH: Final = "/v1/Ar"
#: The herIds asked for, in order, by requests that passed the auth check (tests count them).
REQUESTS: Final = web.AppKey("ar_requests", list[str])
_ANSWERS: Final = web.AppKey("ar_answers", dict[str, bytes])  # HER-id -> response body
_NOT_FOUND_BODY: Final = web.AppKey("ar_not_found", bytes)
_DIR: Final = web.AppKey("ar_dir", Path)

_SOAP: Final = "http://www.w3.org/2003/05/soap-envelope"
_WSA: Final = "http://www.w3.org/2005/08/addressing"
_CP: Final = "http://register.nhn.no/CommunicationParty"
_XSI_NIL: Final = "{http://www.w3.org/2001/XMLSchema-instance}nil"
_ACTION: Final = "http://register.nhn.no/CommunicationParty/ICommunicationPartyService/GetCommunicationPartyDetails"
_NOT_FOUND_FILE: Final = "ks-get-communication-party-details-not-found-response.xml"
_SERVICE_FILE: Final = "ks-get-communication-party-details-service-response.xml"
_OPERATION: Final = f"{{{_CP}}}GetCommunicationPartyDetails"
_RESULT: Final = f"{{{_SOAP}}}Body/{_OPERATION}Response/{_OPERATION}Result"
_XS_INT: Final = re.compile(r"[+-]?[0-9]{1,10}")  # herId is an xs:int
_SOAP_XML: Final = "application/soap+xml; charset=utf-8"


@dataclass(frozen=True)
class SyntheticParty:
    """A party NHN's files do not have, answered in the shape of the service fixture."""

    her_id: str
    name: str
    parent_her_id: str | None = None
    parent_name: str | None = None
    active: bool = True
    valid: bool = True  # IsValidCommunicationParty: whether it can receive messages


def ar_dir(shared: Path | None = None) -> Path:
    """Where the Adresseregister files are: ``<shared>/standards/nhn/ar``, ``../shared`` by default."""
    return (shared if shared is not None else PROJECT_ROOT.parent / "shared") / "standards" / "nhn" / "ar"


def fixture_parties(shared: Path | None = None) -> dict[str, Path]:
    """HER-id -> file for every ks-*.xml that describes a party, the HER-id read from the file itself."""
    parties: dict[str, Path] = {}
    for path in sorted(ar_dir(shared).glob("ks-*.xml")):
        result = parse(path.read_bytes()).root.find(_RESULT)
        her_id = result.findtext(f"{{{_CP}}}HerId") if result is not None else None
        if her_id:
            parties[her_id.strip()] = path
    return parties


def region_parties(register: Register) -> tuple[SyntheticParty, ...]:
    """One synthetic party per remote party of a region (St. Olavs' departments and lab for SiO), its
    organisation as the parent - as the register lists a service under its organisation."""
    return tuple(
        SyntheticParty(party.her_id, party.name, party.organisation.her_id, party.organisation.name)
        for party in register.remote_parties
    )


def render_party(party: SyntheticParty, shared: Path | None = None) -> bytes:
    """The register's answer for a synthetic party: the service fixture with the party's fields put in."""
    return _render(party, ar_dir(shared))


def _render(party: SyntheticParty, folder: Path) -> bytes:
    envelope = copy.deepcopy(_service_template(folder))
    result = envelope.find(_RESULT)
    fields = {
        "HerId": party.her_id,
        "Name": party.name,
        "ParentHerId": party.parent_her_id or "-1",
        "ParentName": party.parent_name,
        "Active": "true" if party.active else "false",
        "IsValidCommunicationParty": "true" if party.valid else "false",
    }
    for name, value in fields.items():
        element = result.find(f"{{{_CP}}}{name}")
        element.text = value
        if value is None:
            element.set(_XSI_NIL, "true")
        else:
            element.attrib.pop(_XSI_NIL, None)
    data: bytes = etree.tostring(envelope, encoding="utf-8")
    return data


def ar_app(
    parties: Mapping[str, Path] | None = None,
    *,
    username: str,
    password: str,
    synthetic: Iterable[SyntheticParty] = (),
    shared: Path | None = None,
) -> web.Application:
    """The Adresseregister double. ``parties`` maps HER-ids to response files (relative to the ar folder,
    or absolute); by default every party of the ks-*.xml files. ``synthetic`` adds parties of our own."""
    folder = ar_dir(shared)
    mapping = fixture_parties(shared) if parties is None else parties
    app = web.Application()
    app[REQUESTS] = []
    app[_DIR] = folder
    app[_ANSWERS] = {str(int(her_id)): (folder / path).read_bytes() for her_id, path in mapping.items()}
    app[_NOT_FOUND_BODY] = (folder / _NOT_FOUND_FILE).read_bytes()
    for party in synthetic:
        add_party(app, party)
    app.router.add_post(AR_PATH, functools.partial(_handle, username=username, password=password))
    return app


def add_party(app: web.Application, party: SyntheticParty) -> None:
    """Answer for one more synthetic party from now on (also while the app is serving)."""
    app[_ANSWERS][str(int(party.her_id))] = _render(party, app[_DIR])


async def _handle(request: web.Request, *, username: str, password: str) -> web.Response:
    if not _authorised(request.headers.get("Authorization", ""), username, password):
        return web.Response(
            status=401, text="401 Unauthorized", headers={"WWW-Authenticate": 'Basic realm="Adresseregister"'}
        )
    if request.content_type != "application/soap+xml":
        return web.Response(status=415, text="A SOAP 1.2 request is application/soap+xml.")
    try:
        envelope = parse(await request.read(), max_bytes=64 * 1024).root
    except GatewayError as exc:
        return _fault("Sender", None, f"The request could not be read: {exc.message}")
    if envelope.tag != f"{{{_SOAP}}}Envelope":
        return _fault("VersionMismatch", None, "The request is not a SOAP 1.2 envelope.")
    header = f"{{{_SOAP}}}Header/{{{_WSA}}}"
    if envelope.findtext(header + "Action") != _ACTION:
        return _fault("Sender", "a:ActionNotSupported", "The WS-Addressing Action is not one this service has.")
    if not envelope.findtext(header + "MessageID"):
        return _fault("Sender", "a:MessageAddressingHeaderRequired", "A WS-Addressing MessageID is required.")
    her_id = (envelope.findtext(f"{{{_SOAP}}}Body/{_OPERATION}/{{{_CP}}}herId") or "").strip()
    if not _XS_INT.fullmatch(her_id) or not -(2**31) <= int(her_id) < 2**31:
        return _fault("Sender", "a:DeserializationFailed", "The herId is not an xs:int.")
    request.app[REQUESTS].append(her_id)
    answer = request.app[_ANSWERS].get(str(int(her_id)))
    if answer is None:
        return web.Response(status=500, body=request.app[_NOT_FOUND_BODY], headers={"Content-Type": _SOAP_XML})
    return web.Response(body=answer, headers={"Content-Type": _SOAP_XML})


def _authorised(header: str, username: str, password: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return False
    expected = f"{username}:{password}".encode()
    return scheme.lower() == "basic" and hmac.compare_digest(given, expected)


def _fault(code: str, subcode: str | None, reason: str) -> web.Response:
    envelope = etree.Element(f"{{{_SOAP}}}Envelope", nsmap={"s": _SOAP, "a": _WSA})
    fault = etree.SubElement(etree.SubElement(envelope, f"{{{_SOAP}}}Body"), f"{{{_SOAP}}}Fault")
    code_element = etree.SubElement(fault, f"{{{_SOAP}}}Code")
    etree.SubElement(code_element, f"{{{_SOAP}}}Value").text = f"s:{code}"
    if subcode is not None:
        sub = etree.SubElement(code_element, f"{{{_SOAP}}}Subcode")
        etree.SubElement(sub, f"{{{_SOAP}}}Value").text = subcode
    text = etree.SubElement(etree.SubElement(fault, f"{{{_SOAP}}}Reason"), f"{{{_SOAP}}}Text")
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = reason
    return web.Response(
        status=500, body=etree.tostring(envelope, encoding="utf-8"), headers={"Content-Type": _SOAP_XML}
    )


@functools.lru_cache(maxsize=4)
def _service_template(folder: Path) -> etree._Element:
    """The service fixture, parsed once per folder; :func:`render_party` fills in copies of it."""
    return parse((folder / _SERVICE_FILE).read_bytes()).root

"""AppRec 1.0 / 1.1: building the receipt for a message, and reading one that arrives.

Per AppRec 1.1 (HIS 80415:2012) §3-§6: the receiver of the original answers as the AppRec *Sender* (role
PRIM or COP in 1.1), the original sender is the AppRec *Receiver* (role AVS); every Ident of both parties
is copied; ``OriginalMsgId`` holds the original's Type, GenDate and MsgId; ``Status`` is 1 (OK), 2 (Avvist,
needs at least one ``Error``) or 3 (OK, feil i delmelding); errors carry V, S (2.16.578.1.12.4.1.1.8221),
DN and the free text in OT. Only ``Error`` may carry an ``S`` attribute: every other code is a CS.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from gateway import __version__
from gateway.model.envelope import Addressee, Envelope, Ident
from gateway.xml import serialize

__all__ = [
    "APPREC_NAMESPACES",
    "ERROR_OID",
    "ERROR_TEXTS",
    "AppRecError",
    "ReceivedAppRec",
    "build_apprec",
    "read_apprec",
]

APPREC_NAMESPACES = {
    "1.0": "http://www.kith.no/xmlstds/apprec/2004-11-21",
    "1.1": "http://www.kith.no/xmlstds/apprec/2012-02-15",
}
_MIG = {"1.0": "1.0 2004-11-21", "1.1": "v1.1 2012-02-15"}
ERROR_OID = "2.16.578.1.12.4.1.1.8221"
STATUS_NAMES = {"1": "OK", "2": "Avvist", "3": "OK, feil i delmelding"}

#: Display names of the error codes of code system 8221 (AppRec 1.1 §6.3).
ERROR_TEXTS = {
    "T01": "Ikke XML / ikke well-formed / uleselig",
    "T02": "XML validerer ikke",
    "T10": "Støtter ikke meldingsformatet",
    "T99": "Annen feil på format",
    "S01": "Feil på signatur",
    "S02": "Ugyldig sertifikat",
    "S03": "Tilbaketrukket sertifikat",
    "S99": "Annen feil på signatur/sertifikat",
    "E10": "Ugyldig meldingsidentifikator",
    "E20": "Lege finnes ikke",
    "E21": "Mottaker finnes ikke",
    "E30": "Fødselsnummer mangler",
    "E31": "Fødselsnummer er feil",
    "E32": "Navn mangler",
    "E35": "Pasienten finnes ikke i mottakersystemet",
    "E36": "Pasientopplysninger er utilstrekkelige",
    "E53": "Fødselsnummer/D-nummer finnes ikke i Folkeregisteret",
    "E54": "Fødselsnummer er ikke registrert i mottakersystemet",
    "X99": "Annen feil",
}
_ID_TYPE_NAMES = {
    "HER": "HER-id",
    "ENH": "Organisasjonsnummeret i Enhetsregisteret",
    "HPR": "HPR-nummer",
    "RSH": "RESH-id",
    "LOK": "Lokal identifikator",
}


@dataclass(frozen=True)
class AppRecError:
    code: str
    text: str = ""  # free text for OT

    @property
    def name(self) -> str:
        return ERROR_TEXTS.get(self.code, "Annen feil")


@dataclass(frozen=True)
class ReceivedAppRec:
    """What an arriving AppRec says."""

    version: str
    msg_id: str | None
    status: str | None
    errors: tuple[AppRecError, ...]
    original_type: str | None
    original_issue_date: str | None
    original_msg_id: str | None
    sender: Addressee | None  # the party that answers (the original's receiver)
    receiver: Addressee | None  # the original's sender


def build_apprec(
    original: Envelope,
    *,
    version: str,
    answering: Addressee,
    role: str,
    status: str,
    errors: tuple[AppRecError, ...] = (),
    msg_id: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """The AppRec ``answering`` (the original's receiver or a copy receiver, role PRIM or COP) sends back to
    the original's sender. Raises ``ValueError`` for a status 2 without errors or an unknown version."""
    if version not in APPREC_NAMESPACES:
        raise ValueError(f"unknown AppRec version {version!r}")
    if status not in STATUS_NAMES:
        raise ValueError(f"AppRec status must be 1, 2 or 3, not {status!r}")
    if status == "2" and not errors:
        raise ValueError("a rejecting AppRec (status 2) needs at least one error")
    if original.sender is None:
        raise ValueError("the original names no sender to answer")
    ns = APPREC_NAMESPACES[version]
    e = _Maker(ns)
    root = e("AppRec")
    e.add(root, "MsgType", V="APPREC", DN="Applikasjonskvittering")
    e.add(root, "MIGversion", text=_MIG[version])
    e.add(root, "SoftwareName", text="SiO e-meldingsgateway")
    e.add(root, "SoftwareVersion", text=__version__)
    e.add(root, "GenDate", text=(now or datetime.now(UTC)).isoformat(timespec="seconds"))
    e.add(root, "Id", text=msg_id or str(uuid.uuid4()))
    sender = e.add(root, "Sender")
    if version == "1.1":
        e.add(sender, "Role", V=role, DN="Kopimottaker" if role == "COP" else "Primærmottaker")
    elif role == "COP":
        e.add(sender, "Role", V="COP", DN="Kopimottaker")
    _hcp(e, sender, answering)
    receiver = e.add(root, "Receiver")
    if version == "1.1":
        e.add(receiver, "Role", V="AVS", DN="Avsender")
    _hcp(e, receiver, original.sender)
    e.add(root, "Status", V=status, DN=STATUS_NAMES[status])
    for error in errors:
        attrs = {"V": error.code, "S": ERROR_OID, "DN": error.name}
        if error.text:
            attrs["OT"] = error.text[:2000]
        e.add(root, "Error", **attrs)
    ref = e.add(root, "OriginalMsgId")
    attrs = {"V": original.msg_type or ""}
    if original.msg_type_name:
        attrs["DN"] = original.msg_type_name
    e.add(ref, "MsgType", **attrs)
    e.add(ref, "IssueDate", text=_issue_date(original.gen_date))
    e.add(ref, "Id", text=original.msg_id or "")
    return serialize(root)


def _issue_date(gen_date: str | None) -> str:
    """OriginalMsgId/IssueDate is an xs:dateTime; base messages may date themselves with a date only."""
    if not gen_date:
        return "1970-01-01T00:00:00"
    return gen_date if "T" in gen_date else f"{gen_date}T00:00:00"


class _Maker:
    def __init__(self, ns: str) -> None:
        self.ns = ns

    def __call__(self, name: str) -> etree._Element:
        return etree.Element(f"{{{self.ns}}}{name}", nsmap={None: self.ns})

    def add(self, parent: etree._Element, name: str, text: str | None = None, **attrs: str) -> etree._Element:
        child = etree.SubElement(parent, f"{{{self.ns}}}{name}", attrs)
        if text is not None:
            child.text = text
        return child


def _hcp(e: _Maker, parent: etree._Element, party: Addressee) -> None:
    """Mirror a party into HCP: Inst(Name, Id, TypeId, Dept*, AdditionalId*, HCPerson*) or HCProf."""
    hcp = e.add(parent, "HCP")
    if not party.name and not party.idents and len(party.units) == 1 and party.units[0].level == "person":
        person = party.units[0]
        _identified(e, e.add(hcp, "HCProf"), person.name, person.idents)
        return
    inst = e.add(hcp, "Inst")
    main, extra = _split(party.idents)
    if party.name:
        e.add(inst, "Name", text=party.name)
    if main is not None:
        e.add(inst, "Id", text=main.id)
        e.add(inst, "TypeId", **_type(main.type))
    for unit in party.units:
        if unit.level == "service":
            _identified(e, e.add(inst, "Dept"), unit.name, unit.idents)
    for ident in extra:
        _additional(e, inst, ident)
    for unit in party.units:
        if unit.level == "person":
            _identified(e, e.add(inst, "HCPerson"), unit.name, unit.idents)


def _identified(e: _Maker, element: etree._Element, name: str | None, idents: tuple[Ident, ...]) -> None:
    main, extra = _split(idents)
    if name:
        e.add(element, "Name", text=name)
    if main is not None:
        e.add(element, "Id", text=main.id)
        e.add(element, "TypeId", **_type(main.type))
    for ident in extra:
        _additional(e, element, ident)


def _additional(e: _Maker, parent: etree._Element, ident: Ident) -> None:
    extra = e.add(parent, "AdditionalId")
    e.add(extra, "Id", text=ident.id)
    e.add(extra, "Type", **_type(ident.type))


def _split(idents: tuple[Ident, ...]) -> tuple[Ident | None, list[Ident]]:
    """The HER-id (or the first ident) as the main Id; the rest as AdditionalId."""
    if not idents:
        return None, []
    main = next((i for i in idents if i.type == "HER"), idents[0])
    return main, [i for i in idents if i is not main]


def _type(code: str) -> dict[str, str]:
    return {"V": code, "DN": _ID_TYPE_NAMES[code]} if code in _ID_TYPE_NAMES else {"V": code}


def read_apprec(envelope: Envelope, root: etree._Element) -> ReceivedAppRec:
    """Read status, errors and the reference to the original from a parsed AppRec."""
    ns = envelope.kind.namespace
    q = f"{{{ns}}}"
    status = root.find(q + "Status")
    errors = tuple(
        AppRecError((err.get("V") or "").strip(), (err.get("OT") or err.get("DN") or "").strip())
        for err in root.findall(q + "Error")
    )
    original = root.find(q + "OriginalMsgId")

    def text(path: str) -> str | None:
        element = original.find(q + path) if original is not None else None
        value = (element.text or "").strip() if element is not None else ""
        return value or None

    msg_type = original.find(q + "MsgType") if original is not None else None
    return ReceivedAppRec(
        version=envelope.kind.version,
        msg_id=envelope.msg_id,
        status=(status.get("V") or "").strip() if status is not None else None,
        errors=errors,
        original_type=(msg_type.get("V") or "").strip() or None if msg_type is not None else None,
        original_issue_date=text("IssueDate"),
        original_msg_id=text("Id"),
        sender=envelope.sender,
        receiver=envelope.receiver,
    )

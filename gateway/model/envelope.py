"""One ``Envelope`` for every family: the header fields, the parties and the patient a gateway acts on.

MsgHead 1.2 keeps its header in ``MsgInfo`` and names parties as ``Organisation`` with a nested
communication party (``Organisation/Organisation`` for a service, ``HealthcareProfessional`` for a person).
The stand-alone ``Message`` roots (Epikrise, Svarrapport, Rekvisisjon, Henvisning 1.x) keep the header in
the root and name parties as ``HCP/Inst`` with ``Dept`` and ``HCPerson`` at the paths the catalog gives.
AppRecs name them as ``Sender/HCP`` and ``Receiver/HCP``.

Reading is lenient on purpose: a field that is missing is None, so a rejected message can still be
answered if its sender can be identified. Validation decides what is missing for real.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lxml import etree

from gateway.model.kinds import MSGHEAD_NS, Identified, MessageKind
from gateway.model.patient import Patient, read_message_patient, read_msghead_patient

__all__ = ["Addressee", "ConversationRef", "Envelope", "Ident", "Unit", "normalise_her", "read_envelope"]

HER = "HER"


def normalise_her(value: str | None) -> str | None:
    """A HER-id as digits: acceptance tests write '369.767' and '974 793 539'; empty is None."""
    if value is None:
        return None
    digits = "".join(ch for ch in value if ch not in ". \t\r\n")
    return digits if digits.isdigit() else None


@dataclass(frozen=True)
class Ident:
    """An identifier of a party or unit: the value and its type code (HER, ENH, HPR, RSH, LOK, ...)."""

    id: str
    type: str


@dataclass(frozen=True)
class Unit:
    """Below the organisation: a service (level 2, e.g. hjemmetjenesten) or a person (a GP)."""

    level: Literal["service", "person"]
    name: str | None
    idents: tuple[Ident, ...]


@dataclass(frozen=True)
class Addressee:
    """A party as the message names it: the organisation (level 1) and the units under it."""

    name: str | None
    idents: tuple[Ident, ...]
    units: tuple[Unit, ...] = ()
    role: str | None = None

    @property
    def her_ids(self) -> tuple[str, ...]:
        """Every HER-id the party carries, most specific first (person, service, organisation)."""
        ordered = [u for u in self.units if u.level == "person"] + [
            u for u in reversed(self.units) if u.level == "service"
        ]
        found: list[str] = []
        for idents in [u.idents for u in ordered] + [self.idents]:
            for ident in idents:
                her = normalise_her(ident.id) if ident.type == HER else None
                if her and her not in found:
                    found.append(her)
        return tuple(found)

    @property
    def her_id(self) -> str | None:
        """The routing key: the communication party's HER-id (the most specific one named)."""
        ids = self.her_ids
        return ids[0] if ids else None

    @property
    def organisation_her_id(self) -> str | None:
        for ident in self.idents:
            her = normalise_her(ident.id) if ident.type == HER else None
            if her:
                return her
        return None


@dataclass(frozen=True)
class ConversationRef:
    ref_to_parent: str | None
    ref_to_conversation: str | None


@dataclass(frozen=True)
class Envelope:
    """What the gateway knows about a message after reading it. Holds no payload content but the patient,
    which is excluded from ``repr`` and must never be logged."""

    kind: MessageKind
    msg_type: str | None
    msg_type_name: str | None
    mig_version: str | None
    msg_id: str | None
    gen_date: str | None
    sender: Addressee | None
    receiver: Addressee | None
    copies: tuple[Addressee, ...] = ()
    conversation: ConversationRef | None = None
    patient: Patient | None = field(default=None, repr=False)

    @property
    def sender_her(self) -> str | None:
        return self.sender.her_id if self.sender else None

    @property
    def receiver_her(self) -> str | None:
        return self.receiver.her_id if self.receiver else None


# --- reading -----------------------------------------------------------------------------------------


def _text(element: etree._Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    text = element.text.strip()
    return text or None


def _attr(element: etree._Element | None, name: str) -> str | None:
    if element is None:
        return None
    value = (element.get(name) or "").strip()
    return value or None


class _Reader:
    """Namespace-aware lookups by local-name paths ('MsgInfo/Sender')."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    def path(self, path: str) -> str:
        return "/".join(f"{{{self.ns}}}{step}" for step in path.split("/"))

    def find(self, element: etree._Element | None, path: str) -> etree._Element | None:
        return None if element is None else element.find(self.path(path))

    def findall(self, element: etree._Element | None, path: str) -> list[etree._Element]:
        return [] if element is None else element.findall(self.path(path))

    def text(self, element: etree._Element | None, path: str) -> str | None:
        return _text(self.find(element, path))

    def attr(self, element: etree._Element | None, path: str, name: str = "V") -> str | None:
        return _attr(self.find(element, path), name)


def read_envelope(identified: Identified, root: etree._Element) -> Envelope:
    """Read the envelope of an identified document (lenient: absent fields are None)."""
    kind = identified.kind
    if kind.family == "msghead":
        return _read_msghead(kind, root)
    if kind.family == "apprec":
        return _read_apprec(kind, root)
    return _read_message(kind, root)


# MsgHead 1.2 ------------------------------------------------------------------------------------------

_MH = _Reader(MSGHEAD_NS)


def _msghead_idents(element: etree._Element) -> tuple[Ident, ...]:
    idents = []
    for ident in _MH.findall(element, "Ident"):
        value = _MH.text(ident, "Id")
        if value:
            idents.append(Ident(value, _MH.attr(ident, "TypeId") or ""))
    return tuple(idents)


def _msghead_person(element: etree._Element) -> Unit:
    names = [_MH.text(element, n) for n in ("GivenName", "MiddleName", "FamilyName")]
    name = " ".join(n for n in names if n) or None
    return Unit("person", name, _msghead_idents(element))


def _msghead_organisation(org: etree._Element, role: str | None = None) -> Addressee:
    units: list[Unit] = []
    level = org
    while True:
        person = _MH.find(level, "HealthcareProfessional")
        if person is not None:
            units.append(_msghead_person(person))
        nested = _MH.find(level, "Organisation")
        if nested is None:
            break
        units.append(Unit("service", _MH.text(nested, "OrganisationName"), _msghead_idents(nested)))
        level = nested
    return Addressee(_MH.text(org, "OrganisationName"), _msghead_idents(org), tuple(units), role)


def _msghead_party(container: etree._Element | None, role: str | None = None) -> Addressee | None:
    if container is None:
        return None
    org = _MH.find(container, "Organisation")
    if org is not None:
        return _msghead_organisation(org, role)
    person = _MH.find(container, "HealthcareProfessional")
    if person is not None:  # OtherReceiver may name a person with no organisation
        return Addressee(None, (), (_msghead_person(person),), role)
    return None


def _read_msghead(kind: MessageKind, root: etree._Element) -> Envelope:
    info = _MH.find(root, "MsgInfo")
    copies = []
    for other in _MH.findall(info, "OtherReceiver"):
        party = _msghead_party(other, _MH.attr(other, "RoleReceiver") or "COP")
        if party is not None:
            copies.append(party)
    ref = _MH.find(info, "ConversationRef")
    return Envelope(
        kind=kind,
        msg_type=_MH.attr(info, "Type"),
        msg_type_name=_MH.attr(info, "Type", "DN"),
        mig_version=_MH.text(info, "MIGversion"),
        msg_id=_MH.text(info, "MsgId"),
        gen_date=_MH.text(info, "GenDate"),
        sender=_msghead_party(_MH.find(info, "Sender")),
        receiver=_msghead_party(_MH.find(info, "Receiver")),
        copies=tuple(copies),
        conversation=(
            ConversationRef(_MH.text(ref, "RefToParent"), _MH.text(ref, "RefToConversation"))
            if ref is not None
            else None
        ),
        patient=read_msghead_patient(_MH.find(info, "Patient")),
    )


# HCP-based parties: stand-alone messages and AppRec ---------------------------------------------------


def _hcp_idents(r: _Reader, element: etree._Element) -> tuple[Ident, ...]:
    idents = []
    value = r.text(element, "Id")
    if value:
        idents.append(Ident(value, r.attr(element, "TypeId") or ""))
    for extra in r.findall(element, "AdditionalId"):
        extra_value = r.text(extra, "Id")
        if extra_value:
            idents.append(Ident(extra_value, r.attr(extra, "Type") or ""))
    return tuple(idents)


def _hcp_party(r: _Reader, container: etree._Element | None) -> Addressee | None:
    """Read ``<container><Role/>...<HCP><Inst>|<HCProf>`` into an Addressee."""
    if container is None:
        return None
    role = r.attr(container, "Role")
    hcp = r.find(container, "HCP")
    inst = r.find(hcp, "Inst")
    if inst is not None:
        units = [Unit("service", r.text(d, "Name"), _hcp_idents(r, d)) for d in r.findall(inst, "Dept")]
        units += [Unit("person", r.text(p, "Name"), _hcp_idents(r, p)) for p in r.findall(inst, "HCPerson")]
        return Addressee(r.text(inst, "Name"), _hcp_idents(r, inst), tuple(units), role)
    prof = r.find(hcp, "HCProf")
    if prof is not None:
        return Addressee(None, (), (Unit("person", r.text(prof, "Name"), _hcp_idents(r, prof)),), role)
    return Addressee(None, (), (), role) if hcp is not None else None


def _read_message(kind: MessageKind, root: etree._Element) -> Envelope:
    r = _Reader(kind.namespace)
    copies = []
    for copy in r.findall(root, kind.copies) if kind.copies else []:
        party = _hcp_party(r, copy)
        if party is not None:
            copies.append(Addressee(party.name, party.idents, party.units, party.role or "COP"))
    return Envelope(
        kind=kind,
        msg_type=r.attr(root, "Type"),
        msg_type_name=r.attr(root, "Type", "DN"),
        mig_version=r.text(root, "MIGversion"),
        msg_id=r.text(root, "MsgId"),
        gen_date=r.attr(root, "GenDate"),
        sender=_hcp_party(r, r.find(root, kind.sender)) if kind.sender else None,
        receiver=_hcp_party(r, r.find(root, kind.receiver)) if kind.receiver else None,
        copies=tuple(copies),
        patient=read_message_patient(r.find(root, kind.patient), kind.namespace) if kind.patient else None,
    )


def _read_apprec(kind: MessageKind, root: etree._Element) -> Envelope:
    r = _Reader(kind.namespace)
    return Envelope(
        kind=kind,
        msg_type=r.attr(root, "MsgType"),
        msg_type_name=r.attr(root, "MsgType", "DN"),
        mig_version=r.text(root, "MIGversion"),
        msg_id=r.text(root, "Id"),
        gen_date=r.text(root, "GenDate"),
        sender=_hcp_party(r, r.find(root, "Sender")),
        receiver=_hcp_party(r, r.find(root, "Receiver")),
    )

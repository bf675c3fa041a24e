"""The patient as a message names it - only what the identification rule (E36) needs.

This is personal data. ``Patient`` never shows its content in ``repr``; nothing here is ever logged.
MsgHead carries ``MsgInfo/Patient`` (FamilyName, GivenName, DateOfBirth, Sex, Ident(Id, TypeId)); the
stand-alone messages carry ``Patient`` with Name, Sex/@V, DateOfBirth/@V, OffId and TypeOffId/@V.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from gateway.model.kinds import MSGHEAD_NS

__all__ = ["Patient", "PersonId", "read_message_patient", "read_msghead_patient"]


@dataclass(frozen=True, repr=False)
class PersonId:
    value: str
    type: str  # code system 8116: FNR, DNR, HNR, HPR, PNR, ... ("" when the message gives none)

    def __repr__(self) -> str:
        return f"PersonId(type={self.type!r}, value=<redacted>)"


@dataclass(frozen=True, repr=False)
class Patient:
    has_name: bool
    ids: tuple[PersonId, ...]
    birth_date: str | None
    sex: str | None

    def __repr__(self) -> str:
        return "Patient(<redacted>)"

    def ids_of(self, *types: str) -> list[str]:
        return [i.value for i in self.ids if i.type in types]


def _text(element: etree._Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _v(element: etree._Element | None) -> str:
    return (element.get("V") or "").strip() if element is not None else ""


def read_msghead_patient(patient: etree._Element | None) -> Patient | None:
    if patient is None:
        return None
    q = f"{{{MSGHEAD_NS}}}"
    has_name = bool(_text(patient.find(q + "FamilyName")))  # a given name may be unknown
    ids = []
    for ident in patient.findall(q + "Ident"):
        value = _text(ident.find(q + "Id"))
        ids.append(PersonId(value, _v(ident.find(q + "TypeId")).upper()))
    return Patient(
        has_name=has_name,
        ids=tuple(ids),
        birth_date=_text(patient.find(q + "DateOfBirth")) or None,
        sex=_v(patient.find(q + "Sex")) or None,
    )


def read_message_patient(patient: etree._Element | None, ns: str) -> Patient | None:
    if patient is None:
        return None
    q = f"{{{ns}}}"
    ids = []
    off_id = _text(patient.find(q + "OffId"))
    if off_id or patient.find(q + "TypeOffId") is not None:
        ids.append(PersonId(off_id, _v(patient.find(q + "TypeOffId")).upper()))
    return Patient(
        has_name=bool(_text(patient.find(q + "Name"))),
        ids=tuple(ids),
        birth_date=_v(patient.find(q + "DateOfBirth")) or None,
        sex=_v(patient.find(q + "Sex")) or None,
    )

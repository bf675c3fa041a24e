"""The AppRec rules a receiving gateway applies after the schema (AppRec 1.1 §3.2-3.3, HITS 1168).

Each rule reads the envelope and raises the ``MessageError`` whose KITH code it stands for, with a text
that says what is wrong in plain words (it becomes the AppRec's ``OT`` and the API error message). The
texts never repeat a national identity number.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.errors import ImplausibleDate, InvalidMsgId, MissingField, PatientNotIdentified, UnknownReceiver
from gateway.model.envelope import Addressee, Envelope
from gateway.model.identity import is_valid
from gateway.model.patient import Patient
from gateway.registry import Register

__all__ = [
    "check_gen_date",
    "check_ids",
    "check_patient",
    "check_receiver",
    "check_sender",
    "gen_timestamp",
    "is_uuid",
]

_OSLO = ZoneInfo("Europe/Oslo")
#: How far ahead of our clock a GenDate may be (clock skew between systems), and the earliest one taken.
GEN_DATE_AHEAD_S = 24 * 3600.0
GEN_DATE_EARLIEST = datetime(1990, 1, 1, tzinfo=_OSLO)

# The canonical 8-4-4-4-12 form, and the 32-digit form without hyphens (a GUID printed "N"-style).
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$|^[0-9a-fA-F]{32}$")

#: Identifier types that identify a patient together with the name (code system 8116): fødselsnummer,
#: D-number and the *felles* hjelpenummer (FHN). A plain H-number (HNR) is internal to the organisation
#: that issued it (HIS 1001:2010) and cannot identify the patient at the receiver.
_PERSON_ID_TYPES = ("FNR", "DNR", "FHN")


def is_uuid(value: str | None) -> bool:
    return bool(value and _UUID.match(value))


def check_ids(envelope: Envelope) -> None:
    """E10: the MsgId must be a UUID (AppRec 1.1 §3.3), whatever the schema allows."""
    if not envelope.msg_id:
        raise MissingField(f"The {envelope.kind.title} has no MsgId.")
    if not is_uuid(envelope.msg_id):
        raise InvalidMsgId(f"MsgId '{envelope.msg_id[:80]}' is not a UUID (GUID); every message needs a unique one.")


def gen_timestamp(gen_date: str | None) -> float | None:
    """A GenDate as UNIX time; without a zone it is Norwegian local time. None when it does not read."""
    if not gen_date:
        return None
    try:
        when = datetime.fromisoformat(gen_date.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=_OSLO)
        return when.timestamp()
    except (ValueError, OverflowError):
        return None


def check_gen_date(envelope: Envelope, *, now: float) -> None:
    """A GenDate a message can be sent with: not before 1990, not more than a day ahead of our clock.
    (Receipt deadlines count from it; a date in year 9999 would put them past what a calendar holds.)"""
    when = gen_timestamp(envelope.gen_date)
    if when is None:
        return  # absent, or not a date: the schema's business
    if when > now + GEN_DATE_AHEAD_S or when < GEN_DATE_EARLIEST.timestamp():
        raise ImplausibleDate(
            f"GenDate {(envelope.gen_date or '')[:40]} is not a plausible time to send a message: it must lie between "
            f"{GEN_DATE_EARLIEST:%Y-%m-%d} and a day after now."
        )


def check_sender(envelope: Envelope) -> None:
    """The sender must be identifiable by a HER-id, or nobody can be answered (HITS 1168 §5.3)."""
    if envelope.sender is None or envelope.sender_her is None:
        raise MissingField(
            f"The {envelope.kind.title} does not identify its sender by a HER-id; it cannot be routed or answered."
        )


def check_receiver(envelope: Envelope, register: Register) -> None:
    """E21: the receiving communication party must be one of the register's."""
    receiver = envelope.receiver
    if receiver is None or receiver.her_id is None:
        raise UnknownReceiver(
            f"The {envelope.kind.title} does not name its receiver by a HER-id; the receiving service cannot be found."
        )
    if register.find(receiver.her_ids) is None:
        raise UnknownReceiver(_unknown(receiver, register))


def _unknown(receiver: Addressee, register: Register) -> str:
    ids = ", ".join(receiver.her_ids)
    org = register.organisation(receiver.organisation_her_id)
    if org is not None:
        return f"The receiving service (HER-id {ids}) is not registered at {org.name}."
    return f"No communication party with HER-id {ids} is registered in {register.name or 'the register'}."


def check_patient(envelope: Envelope, *, required: bool, emergency: bool = False) -> None:
    """E36: name + FNR, name + DNR, name + felles hjelpenummer, or name + birth date + sex.

    Emergency referrals (hastegrad 0, øyeblikkelig hjelp) are exempt and must be accepted. The more
    specific codes E30 (FNR missing), E31 (FNR wrong) and E32 (name missing) go with the E36 as details.
    """
    patient = envelope.patient
    if emergency:
        return
    if patient is None:
        if required:
            raise PatientNotIdentified(f"The {envelope.kind.title} names no patient.")
        return
    problem = patient_problem(patient)
    if problem is not None:
        text, details = problem
        raise PatientNotIdentified(f"The patient is not sufficiently identified: {text}.", details=details)


_NAMES = {"E30": "Fødselsnummer mangler", "E31": "Fødselsnummer er feil", "E32": "Navn mangler"}


def patient_problem(patient: Patient) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """Why a patient is not sufficiently identified (text, and E30/E31/E32 details), or None."""
    typed = [i for i in patient.ids if i.type in (*_PERSON_ID_TYPES, "HNR")]
    valid = [i for i in typed if i.type in _PERSON_ID_TYPES and is_valid(i.value)]
    if patient.has_name and (valid or (patient.birth_date and patient.sex)):
        return None
    details: list[tuple[str, str]] = []
    reasons: list[str] = []
    if not patient.has_name:
        details.append(("E32", _NAMES["E32"]))
        reasons.append("the patient's name is missing")
    fnr = [i for i in typed if i.type == "FNR"]
    if any(not i.value for i in fnr) or (not typed and not patient.birth_date):
        details.append(("E30", _NAMES["E30"]))
    if any(i.value and not is_valid(i.value) for i in fnr):
        details.append(("E31", _NAMES["E31"]))
    if not valid:
        if any(i.value and not is_valid(i.value) for i in typed):
            reasons.append(
                f"the {next(i.type for i in typed if i.value and not is_valid(i.value))} given fails its control digits"
            )
        elif any(i.type == "HNR" and i.value for i in typed):
            reasons.append("an H-number internal to the sender is no national identity number")
        elif any(not i.value for i in typed):
            reasons.append("the national identity number is empty")
        else:
            reasons.append("no national identity number (FNR, DNR or felles hjelpenummer) is given")
        if not (patient.birth_date and patient.sex):
            reasons.append("birth date and sex are not both given")
    return "; ".join(reasons), tuple(details)

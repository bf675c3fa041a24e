"""The AppRec rules on their own: MsgId (E10), patient identification (E36 with E30/E31/E32), receiver (E21)."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidMsgId, MissingField, PatientNotIdentified, UnknownReceiver
from gateway.model.envelope import Addressee, Envelope, Ident, Unit
from gateway.model.identity import NationalIdKind, classify, control_digits, is_valid
from gateway.model.kinds import Catalog
from gateway.model.patient import Patient, PersonId
from gateway.registry import Register
from gateway.validation import rules

SYNTHETIC = "138945123"  # a synthetic person: day 13, month 09+80, year 45, individual digits 123


def synthetic_fnr() -> str:
    digits = control_digits(SYNTHETIC)
    assert digits is not None
    return SYNTHETIC + digits


def envelope(
    catalog: Catalog,
    *,
    patient: Patient | None = None,
    msg_id: str = "0b9c3a6e-4c1f-4e7b-9d3a-2f1e0c9b8a77",
    receiver: Addressee | None = None,
) -> Envelope:
    kind = catalog.by_name("plo-innleggelsesrapport-1.6")
    org = Addressee("Frøya kommune", (Ident("7100100", "HER"),), (Unit("service", "PLO", (Ident("7100101", "HER"),)),))
    return Envelope(
        kind,
        "INNLEGGELSESRAPPORT",
        None,
        "v1.2 2006-05-24",
        msg_id,
        "2026-11-22T08:00:00",
        org,
        receiver or org,
        patient=patient,
    )


class TestIdentity:
    def test_control_digits(self) -> None:
        """mod-11 control digits, and the month+80 synthetic classification."""
        fnr = synthetic_fnr()
        assert is_valid(fnr) and classify(fnr) is NationalIdKind.SYNTHETIC
        assert not is_valid(fnr[:-1] + str((int(fnr[-1]) + 1) % 10))
        assert not is_valid("1234567890") and not is_valid("abcdefghijk")


class TestMsgId:
    @pytest.mark.parametrize(
        "good",
        [
            "0b9c3a6e-4c1f-4e7b-9d3a-2f1e0c9b8a77",
            "0B9C3A6E-4C1F-4E7B-9D3A-2F1E0C9B8A77",
            "0b9c3a6e4c1f4e7b9d3a2f1e0c9b8a77",
        ],
    )
    def test_uuids_pass(self, catalog: Catalog, good: str) -> None:
        """Canonical UUIDs in either case, and the 32-digit GUID form, are valid MsgIds."""
        rules.check_ids(envelope(catalog, msg_id=good))

    @pytest.mark.parametrize(
        "bad",
        [
            "MSG-1",
            "25904950-a0fd-11-ad55-08002a9666",
            "4c661458-c412-4c14-baae-8f092g54f6e2",
            "{0b9c3a6e-4c1f-4e7b-9d3a-2f1e0c9b8a77}",
        ],
    )
    def test_non_uuids_are_e10(self, catalog: Catalog, bad: str) -> None:
        """Anything else is E10, whatever the schema allows."""
        with pytest.raises(InvalidMsgId) as info:
            rules.check_ids(envelope(catalog, msg_id=bad))
        assert info.value.apprec_code == "E10"

    def test_missing_msgid(self, catalog: Catalog) -> None:
        """No MsgId at all is a missing field (T02)."""
        with pytest.raises(MissingField):
            rules.check_ids(envelope(catalog, msg_id=""))


class TestPatient:
    def check(self, catalog: Catalog, patient: Patient | None, **kw: bool) -> None:
        rules.check_patient(
            envelope(catalog, patient=patient),
            required=kw.get("required", True),
            emergency=kw.get("emergency", False),
        )

    def test_name_and_fnr(self, catalog: Catalog) -> None:
        """Name + a valid FNR (here synthetic) identifies the patient."""
        self.check(catalog, Patient(True, (PersonId(synthetic_fnr(), "FNR"),), None, None))

    def test_name_birth_date_and_sex(self, catalog: Catalog) -> None:
        """Name + birth date + sex identifies the patient without any number."""
        self.check(catalog, Patient(True, (), "1945-09-13", "2"))

    def test_wrong_fnr_is_e36_with_e31(self, catalog: Catalog) -> None:
        """A wrong FNR: E36, with E31 as detail."""
        bad = synthetic_fnr()[:-1] + str((int(synthetic_fnr()[-1]) + 1) % 10)
        with pytest.raises(PatientNotIdentified) as info:
            self.check(catalog, Patient(True, (PersonId(bad, "FNR"),), None, None))
        assert [c for c, _ in info.value.details] == ["E31"]
        assert bad not in info.value.message

    def test_no_name_is_e36_with_e32(self, catalog: Catalog) -> None:
        """A missing name: E36 with E32, even with a valid FNR."""
        with pytest.raises(PatientNotIdentified) as info:
            self.check(catalog, Patient(False, (PersonId(synthetic_fnr(), "FNR"),), None, None))
        assert "E32" in [c for c, _ in info.value.details]

    def test_local_h_number_is_not_enough(self, catalog: Catalog) -> None:
        """An organisation-internal H-number (HNR) does not identify; a felles hjelpenummer (FHN) does."""
        h = "134945123"
        h += control_digits(h) or ""
        with pytest.raises(PatientNotIdentified):
            self.check(catalog, Patient(True, (PersonId(h, "HNR"),), None, None))
        self.check(catalog, Patient(True, (PersonId(h, "FHN"),), None, None))

    def test_emergency_referral_is_exempt(self, catalog: Catalog) -> None:
        """Øyeblikkelig hjelp referrals are accepted without identification."""
        self.check(catalog, Patient(False, (), None, None), emergency=True)

    def test_missing_patient(self, catalog: Catalog) -> None:
        """No patient: E36 where the kind always has one, fine where it is optional."""
        with pytest.raises(PatientNotIdentified):
            self.check(catalog, None, required=True)
        self.check(catalog, None, required=False)


class TestReceiver:
    def test_unknown_service_of_known_organisation(self, catalog: Catalog, register: Register) -> None:
        """E21 names the organisation when only the service is unknown."""
        receiver = Addressee(
            "Frøya kommune", (Ident("7100100", "HER"),), (Unit("service", "X", (Ident("7100199", "HER"),)),)
        )
        with pytest.raises(UnknownReceiver) as info:
            rules.check_receiver(envelope(catalog, receiver=receiver), register)
        assert "Frøya kommune" in info.value.message and info.value.apprec_code == "E21"

    def test_known_receiver(self, catalog: Catalog, register: Register) -> None:
        """A registered communication party passes."""
        rules.check_receiver(envelope(catalog), register)

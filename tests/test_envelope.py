"""Reading the envelope of every family: header fields, parties with their HER-ids, patient."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.model.envelope import Addressee, Ident, Unit, normalise_her, read_envelope
from gateway.model.kinds import Catalog
from gateway.xml import parse

from .conftest import SAMPLES, require_shared


def envelope_of(catalog: Catalog, path: Path):  # type: ignore[no-untyped-def]
    doc = parse(path.read_bytes())
    return read_envelope(catalog.identify(doc.root), doc.root)


class TestHerIds:
    def test_normalise(self) -> None:
        """Acceptance tests write HER-ids with dots and spaces; empty is no HER-id."""
        assert normalise_her("369.767") == "369767"
        assert normalise_her(" 974 793 539 ") == "974793539"
        assert normalise_her("") is None
        assert normalise_her("ABC") is None

    def test_most_specific_first(self) -> None:
        """The person's HER-id routes before the service's, the service's before the organisation's."""
        party = Addressee(
            "Orkanger legesenter",
            (Ident("974793539", "ENH"), Ident("7102000", "HER")),
            (
                Unit("service", "Fastlegene", (Ident("7102001", "HER"),)),
                Unit("person", "Dr", (Ident("1", "HPR"),)),
            ),
        )
        assert party.her_ids == ("7102001", "7102000")
        assert party.her_id == "7102001"
        assert party.organisation_her_id == "7102000"


class TestSamples:
    @pytest.fixture(autouse=True)
    def _shared(self) -> None:
        require_shared()

    def test_msghead_plo(self, catalog: Catalog) -> None:
        """A PLO 1.6 MsgHead: kind from the payload namespace, sender service HER-id nested."""
        path = next((SAMPLES / "sarepta-eksempel/plo/1_6/innleggelsesrapport_1_6_mottak").glob("*.xml"))
        env = envelope_of(catalog, path)
        assert env.kind.name == "plo-innleggelsesrapport-1.6"
        assert env.msg_type == "INNLEGGELSESRAPPORT"
        assert env.mig_version == "v1.2 2006-05-24"
        assert env.sender is not None and env.sender.her_id is not None
        assert env.sender.units and env.sender.units[0].level == "service"
        assert env.patient is not None and env.patient.has_name
        national_id = env.patient.ids[0].value
        assert national_id and national_id not in repr(env) and national_id not in repr(env.patient)

    def test_epikrise_parties(self, catalog: Catalog) -> None:
        """Epikrise goes from ServProvider to Requester; GenDate is an attribute."""
        env = envelope_of(catalog, SAMPLES / "sarepta-eksempel/Epikrise/Epikrise_v1-2/epikrise_v1.2_n.xml")
        assert env.kind.name == "epikrise-1.2"
        assert env.sender is not None and env.receiver is not None
        assert env.sender.name != env.receiver.name
        assert env.gen_date and "T" in env.gen_date
        assert [c.role for c in env.copies] == ["COP"] * len(env.copies)

    def test_rekvisisjon_direction(self, catalog: Catalog) -> None:
        """A requisition goes from the requester to the service provider."""
        path = next((SAMPLES / "sarepta-eksempel/Rekvisisjon/Rekvisisjon-v-1-6").glob("*.xml"))
        env = envelope_of(catalog, path)
        assert env.kind.name == "rekvisisjon-1.6"
        assert env.receiver is not None and "OLAV" in (env.receiver.name or "").upper()

    def test_apprec(self, catalog: Catalog) -> None:
        """An AppRec's own id and both parties are read."""
        path = SAMPLES / "helsenorge-messaging/test/Helsenorge.Messaging.Tests/Files/MetadataTests_Apprec11.xml"
        env = envelope_of(catalog, path)
        assert env.kind.name == "apprec-1.1"
        assert env.msg_type == "APPREC" and env.msg_id
        assert env.sender is not None and env.sender.role == "PRIM"
        assert env.receiver is not None and env.receiver.role == "AVS"
        assert env.receiver.her_ids == ("90998", "59")

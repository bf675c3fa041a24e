"""AppRec 1.0 and 1.1 as the gateway builds them: valid against the official schema of their version for
status 1, 2 and 3, parties mirrored with all their Idents, and read back the same."""

from __future__ import annotations

import pytest

from gateway.model.apprec import AppRecError, build_apprec, read_apprec
from gateway.model.envelope import read_envelope
from gateway.model.kinds import Catalog
from gateway.validation.schemas import SchemaSet
from gateway.validation.validator import Validator
from gateway.xml import parse

from .conftest import FIXTURES, SAMPLES, require_shared

ORIGINALS = {
    # AppRec 1.1 goes with Epikrise 1.2, PLO 1.6, Dialogmelding 1.1 ...
    "1.1": [
        FIXTURES / "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml",
        FIXTURES / "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml",
        FIXTURES / "svarrapport-1.4/svar-lab-biokjemi-latin1.xml",
    ],
    # ... 1.0 with the older ones
    "1.0": [
        SAMPLES / "sarepta-eksempel/Dialogmelding/Dialogmelding-v1-0/Dialogmelding_foresporsel_PLO_v1-0.xml",
        SAMPLES / "sarepta-eksempel/Epikrise/Epikrise_v1-1/epikrise_v1.1_n.xml",
    ],
}
STATUSES = {
    "1": (),
    "2": (AppRecError("E36", "The patient is not sufficiently identified."), AppRecError("E31", "")),
    "3": (AppRecError("X99", "Delmelding 2 kunne ikke tolkes."),),
}


@pytest.fixture(autouse=True)
def _shared() -> None:
    require_shared()


def originals(version: str):  # type: ignore[no-untyped-def]
    for path in ORIGINALS[version]:
        doc = parse(path.read_bytes())
        yield path.name, doc


class TestBuiltAppRecs:
    @pytest.mark.parametrize("version", ["1.0", "1.1"])
    @pytest.mark.parametrize("status", ["1", "2", "3"])
    def test_valid_against_official_and_own_schema(
        self, catalog: Catalog, validator: Validator, own_schemas: SchemaSet, version: str, status: str
    ) -> None:
        """Every AppRec the gateway builds validates against the official XSD of its version (and its own)."""
        own = Validator(catalog, own_schemas)
        for name, doc in originals(version):
            envelope = read_envelope(catalog.identify(doc.root), doc.root)
            assert envelope.kind.apprec == version, name
            for answering, role in [(envelope.receiver, "PRIM"), *[(c, "COP") for c in envelope.copies]]:
                assert answering is not None
                xml = build_apprec(
                    envelope, version=version, answering=answering, role=role, status=status, errors=STATUSES[status]
                )
                official = validator.judge(xml)
                assert official.accepted and official.schema_checked, f"{name}: {official.error}"
                assert official.kind is not None and official.kind.name == f"apprec-{version}"
                assert own.judge(xml).accepted

    def test_mirrors_parties_and_references_the_original(self, catalog: Catalog) -> None:
        """Sender = the answering receiver (with its role), Receiver = the original sender (AVS), all Idents."""
        doc = parse((FIXTURES / "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml").read_bytes())
        original = read_envelope(catalog.identify(doc.root), doc.root)
        copy = original.copies[0]
        xml = build_apprec(
            original,
            version="1.1",
            answering=copy,
            role="COP",
            status="2",
            errors=(AppRecError("E21", "Ukjent tjeneste"),),
        )
        apprec_doc = parse(xml)
        received = read_apprec(read_envelope(catalog.identify(apprec_doc.root), apprec_doc.root), apprec_doc.root)
        assert received.status == "2"
        assert [(e.code, e.text) for e in received.errors] == [("E21", "Ukjent tjeneste")]
        assert received.original_msg_id == original.msg_id
        assert received.original_type == original.msg_type
        assert received.original_issue_date == original.gen_date
        assert received.sender is not None and received.sender.her_ids == copy.her_ids
        assert received.sender.role == "COP"
        assert received.receiver is not None and received.receiver.her_ids == original.sender.her_ids  # type: ignore[union-attr]
        assert received.receiver.role == "AVS"
        assert b'S="2.16.578.1.12.4.1.1.8221"' in xml and b'DN="Mottaker finnes ikke"' in xml

    def test_rejection_needs_an_error(self, catalog: Catalog) -> None:
        """Status 2 without an error is not an AppRec the standard allows."""
        doc = parse((FIXTURES / "dialogmelding-1.1/helsefaglig-dialog-svar.xml").read_bytes())
        envelope = read_envelope(catalog.identify(doc.root), doc.root)
        assert envelope.receiver is not None
        with pytest.raises(ValueError, match="at least one error"):
            build_apprec(envelope, version="1.1", answering=envelope.receiver, role="PRIM", status="2")

"""Without the official bundle: the project's own XSDs still check the MsgHead envelope and AppRecs."""

from __future__ import annotations

from gateway.model.kinds import Catalog
from gateway.validation.schemas import SchemaSet
from gateway.validation.validator import Validator

from .test_conformance import SAMPLES, expectations


class TestWithoutBundle:
    def test_unchecked_kinds_are_named(self, own_schemas: SchemaSet, catalog: Catalog) -> None:
        """Every kind but AppRec is reported as not schema-checked (the envelope still is)."""
        unchecked = {k.name for k in own_schemas.unchecked}
        assert unchecked == {k.name for k in catalog.kinds if k.family != "apprec"}

    def test_own_envelope_accepts_every_accepted_sample(self, own_schemas: SchemaSet, catalog: Catalog) -> None:
        """No sample the official schemas accept is refused by the project's own envelope schemas."""
        validator = Validator(catalog, own_schemas)
        for path, (verdict, _code) in expectations().items():
            if verdict != "ACCEPT":
                continue
            judgement = validator.judge((SAMPLES / path).read_bytes())
            assert judgement.accepted, f"{path}: {judgement.error.message if judgement.error else ''}"
            assert judgement.schema_checked == (judgement.kind is not None and judgement.kind.family != "message")

    def test_own_envelope_catches_a_broken_header(self, own_schemas: SchemaSet, catalog: Catalog) -> None:
        """A MsgHead with its MsgInfo children out of order is T02 even without the bundle."""
        sample = (
            SAMPLES / "sarepta-eksempel/Dialogmelding/Dialogmelding-v1-0/Dialogmelding_avvik_v1-0.xml"
        ).read_bytes()
        start, end = sample.index(b"<MIGversion>"), sample.index(b"</MIGversion>") + len(b"</MIGversion>")
        mig = sample[start:end]
        broken = sample[:start] + sample[end:]
        broken = broken.replace(b"</MsgId>", b"</MsgId>" + mig, 1)
        error = Validator(catalog, own_schemas).judge(broken).error
        assert error is not None and error.apprec_code == "T02" and "MIGversion" in error.message

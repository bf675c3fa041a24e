"""Without the official bundle: the project's own XSDs still check the MsgHead envelope and AppRecs."""

from __future__ import annotations

import pytest

from gateway.model.kinds import Catalog
from gateway.validation.schemas import SchemaSet, _Compiled
from gateway.validation.validator import Validator

from .conftest import FIXTURES
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
        """A MsgHead with its MsgInfo children out of order is T02 even without the bundle (so the message is
        one of the project's fixtures, not a sample from ../shared)."""
        sample = (FIXTURES / "dialogmelding-1.1" / "helsefaglig-dialog-foresporsel.xml").read_bytes()
        start, end = sample.index(b"<MIGversion>"), sample.index(b"</MIGversion>") + len(b"</MIGversion>")
        mig = sample[start:end]
        broken = sample[:start] + sample[end:]
        broken = broken.replace(b"</MsgId>", b"</MsgId>" + mig, 1)
        error = Validator(catalog, own_schemas).judge(broken).error
        assert error is not None and error.apprec_code == "T02" and "MIGversion" in error.message

    def test_a_huge_invalid_document_is_not_walked_by_the_explainer(
        self, own_schemas: SchemaSet, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A schema failure in a document of 50,000 elements is T02 with lxml's lines: xmlschema's
        pure-Python walk (seconds per million elements) is kept for documents of a sane size."""
        sample = (FIXTURES / "dialogmelding-1.1" / "helsefaglig-dialog-foresporsel.xml").read_bytes()
        start, end = sample.index(b"<MIGversion>"), sample.index(b"</MIGversion>") + len(b"</MIGversion>")
        broken = sample[:start] + sample[end:]
        broken = broken.replace(b"</MsgId>", b"</MsgId>" + sample[start:end], 1)
        huge = broken.replace(b"</MsgHead>", b"<Filler>" + b"<x/>" * 50000 + b"</Filler></MsgHead>", 1)
        assert huge != broken

        def refuse(*_args: object) -> list[str]:
            raise AssertionError("the explainer was asked to walk a huge document")

        monkeypatch.setattr(_Compiled, "explain", refuse)
        error = Validator(catalog, own_schemas).judge(huge).error
        assert error is not None and error.apprec_code == "T02" and "line " in error.message

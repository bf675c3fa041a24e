"""Variants of the samples the gateway has not seen: re-encodings and re-serialisations of a valid
message must keep its verdict; hostile or damaged ones must be refused."""

from __future__ import annotations

import codecs
import random
import re

import pytest
from lxml import etree

from gateway.validation.validator import Validator

from .test_conformance import SAMPLES, expectations

_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>")


def accepted_samples() -> list[bytes]:
    return [
        (SAMPLES / path).read_bytes()
        for path, (verdict, _code) in sorted(expectations().items())
        if verdict == "ACCEPT"
    ]


def reencode(data: bytes, encoding: str, *, bom: bytes = b"") -> bytes:
    """The same document in another encoding, with a declaration that says so."""
    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    text = etree.tostring(root, encoding="unicode")
    body = f'<?xml version="1.0" encoding="{encoding}"?>\n{text}'
    return bom + body.encode(encoding, errors="xmlcharrefreplace")


def reserialise(data: bytes) -> bytes:
    """Parsed and written again by another serializer: quotes, empty elements, declaration all change."""
    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


class TestKeepsVerdict:
    @pytest.mark.parametrize(
        ("label", "transform"),
        [
            ("iso-8859-1", lambda d: reencode(d, "ISO-8859-1")),
            ("utf-8 with BOM", lambda d: reencode(d, "UTF-8", bom=codecs.BOM_UTF8)),
            ("utf-16", lambda d: reencode(d, "UTF-16")),
            ("re-serialised", reserialise),
            ("no declaration", lambda d: _DECL.sub(b"", d).lstrip()),
        ],
    )
    def test_accepted_sample_stays_accepted(self, validator: Validator, label: str, transform) -> None:  # type: ignore[no-untyped-def]
        """Every accepted sample, transformed, is still accepted."""
        refused = []
        for i, data in enumerate(accepted_samples()):
            if label == "no declaration" and not data.lstrip().startswith(b"<?xml"):
                continue
            judgement = validator.judge(transform(data))
            if not judgement.accepted:
                refused.append(f"#{i}: {judgement.error.event if judgement.error else ''}")
        assert not refused, f"{label}: {refused[:5]}"


class TestRefusesHostileAndDamaged:
    @pytest.fixture(name="sample")
    def _sample(self) -> bytes:
        return (SAMPLES / "sarepta-eksempel/Epikrise/Epikrise_v1-2/epikrise_v1.2_n.xml").read_bytes()

    def test_doctype_injected(self, validator: Validator, sample: bytes) -> None:
        """A valid message with a DOCTYPE and an entity spliced in is refused T01."""
        hostile = _DECL.sub(b'<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE Message [<!ENTITY x "y">]>', sample)
        error = validator.judge(hostile).error
        assert error is not None and error.apprec_code == "T01" and error.event == "message.forbidden_markup"

    def test_external_entity_injected(self, validator: Validator, sample: bytes) -> None:
        """An XXE reference in a valid message is refused, never resolved."""
        hostile = _DECL.sub(
            b'<?xml version="1.0"?><!DOCTYPE Message [<!ENTITY x SYSTEM "file:///etc/hostname">]>', sample
        ).replace(b"<MsgId>", b"<MsgId>&x;", 1)
        assert validator.judge(hostile).error is not None

    def test_truncated_anywhere(self, validator: Validator, sample: bytes) -> None:
        """Cut at 50 random places, the message is refused T01 every time."""
        rng = random.Random(1)
        for cut in sorted(rng.sample(range(1, len(sample) - 20), 50)):
            error = validator.judge(sample[:cut]).error
            assert error is not None and error.apprec_code == "T01", cut

    def test_random_byte_damage(self, validator: Validator, sample: bytes) -> None:
        """A flipped '<' or a broken tag name is refused, never accepted."""
        rng = random.Random(2)
        positions = [m.start() for m in re.finditer(rb"<[A-Za-z]", sample)]
        for pos in rng.sample(positions, 30):
            damaged = sample[: pos + 1] + b"#" + sample[pos + 2 :]
            assert validator.judge(damaged).error is not None, pos

    def test_garbage_and_binary(self, validator: Validator) -> None:
        """Binary input and HTML are refused with a code, not a crash."""
        for junk in (
            bytes(range(256)),
            b"\x00\x01\x02",
            b"<html><body>hei</body></html>",
            b"{}",
            b"\xff\xfe\x00",
        ):
            error = validator.judge(junk).error
            assert error is not None and error.apprec_code in {"T01", "T10"}

    def test_oversize(self, sample: bytes, validator: Validator) -> None:
        """Over the configured cap: refused before parsing."""
        small = Validator(validator.catalog, validator.schemas, max_bytes=1000)
        error = small.judge(sample).error
        assert error is not None and error.event == "message.too_large"

    def test_deep_nesting(self, validator: Validator) -> None:
        """Pathological nesting is refused as not well-formed (libxml2 depth limit), not a crash."""
        bomb = b"<a>" * 100_000 + b"</a>" * 100_000
        error = validator.judge(bomb).error
        assert error is not None and error.apprec_code == "T01"

    def test_unknown_element_in_header(self, validator: Validator, sample: bytes) -> None:
        """An element the schema does not allow is T02 with the path."""
        damaged = sample.replace(b"<MsgId>", b"<Extra>x</Extra><MsgId>", 1)
        error = validator.judge(damaged).error
        assert error is not None and error.apprec_code == "T02" and "Extra" in error.message

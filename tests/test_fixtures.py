"""The fixture messages: synthetic patients only, every one judged as its manifest says."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from gateway.model.identity import NationalIdKind, classify
from gateway.validation.validator import Validator

from .conftest import FIXTURES

_ELEVEN_DIGITS = re.compile(rb"(?<!\d)\d{11}(?!\d)")


def manifest() -> list[dict[str, Any]]:
    return list(tomllib.loads((FIXTURES / "manifest.toml").read_text(encoding="utf-8"))["fixture"])


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.rglob("*.xml"))


class TestSyntheticPatientsOnly:
    def test_every_national_id_is_synthetic(self) -> None:
        """Every 11-digit number in the fixtures is a synthetic person (month + 80, valid control digits)."""
        found = 0
        for path in fixture_files():
            for match in _ELEVEN_DIGITS.finditer(path.read_bytes()):
                number = match.group().decode()
                assert classify(number) is NationalIdKind.SYNTHETIC, f"{path.name}: an id that is not synthetic"
                found += 1
        assert found >= 10  # the fixtures do name patients

    def test_no_real_looking_month(self) -> None:
        """No 11-digit number anywhere has a month 01-12 (a real person's fødselsnummer shape)."""
        real = re.compile(rb"(?<!\d)[0-7]\d(0[1-9]|1[0-2])\d{7}(?!\d)")
        for path in fixture_files():
            assert not real.search(path.read_bytes()), path.name


class TestManifest:
    def test_manifest_lists_every_file(self) -> None:
        """Every fixture file is in the manifest, and every manifest entry exists."""
        listed = {entry["file"] for entry in manifest()}
        on_disk = {str(p.relative_to(FIXTURES)) for p in fixture_files()}
        assert listed == on_disk

    def test_required_kinds_are_covered(self) -> None:
        """The kinds the region exchanges most all have a fixture, some with copy receivers."""
        entries = manifest()
        kinds = {e["kind"] for e in entries if e["expect"] == "accepted"}
        assert {
            "epikrise-1.2",
            "svarrapport-1.4",
            "dialogmelding-1.1",
            "plo-helseopplysninger-lege-1.6",
            "plo-innleggelsesrapport-1.6",
            "plo-utskrivningsrapport-1.6",
            "plo-medisinske-opplysninger-1.6",
            "plo-orientering-tjenestetilbud-1.6",
            "plo-pasientlogistikk-1.6",
        } <= kinds
        assert any(len(e["receivers"]) > 1 for e in entries if e["expect"] == "accepted")
        assert {e["code"] for e in entries if e["expect"] == "rejected"} >= {"T01", "T02", "T10", "E10", "E21", "E36"}

    def test_each_fixture_is_judged_as_listed(self, region_validator: Validator) -> None:
        """With the official bundle and the SiO register, each fixture gets its listed verdict, kind and parties."""
        for entry in manifest():
            judgement = region_validator.judge((FIXTURES / entry["file"]).read_bytes())
            if entry["expect"] == "accepted":
                assert judgement.accepted, f"{entry['file']}: {judgement.error.message if judgement.error else ''}"
                assert judgement.kind is not None and judgement.kind.name == entry["kind"]
                env = judgement.envelope
                assert env is not None and env.sender_her == entry["sender"]
                receivers = [env.receiver_her] + [c.her_id for c in env.copies]
                assert receivers == entry["receivers"], entry["file"]
            else:
                assert judgement.error is not None, entry["file"]
                assert judgement.error.apprec_code == entry["code"], entry["file"]

"""`gateway validate` against the official schemas on every public sample (../shared/standards/samples).

The oracle's verdicts (expected.tsv) map as VALID -> ACCEPT, INVALID -> REJECT T02, NOT-WELLFORMED ->
REJECT T01, NO-SCHEMA -> REJECT T10. The KITH receiver acceptance-test cases (sarepta-testcase/) are built
to test the AppRec rules; the gateway's decision for each is in tests/data/sarepta_verdicts.tsv.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.validation.validator import Validator

from .conftest import BUNDLE, SAMPLES, require_shared

DATA = Path(__file__).parent / "data"
ORACLE_TO_VERDICT = {
    "VALID": ("ACCEPT", "-"),
    "INVALID": ("REJECT", "T02"),
    "NOT-WELLFORMED": ("REJECT", "T01"),
    "NO-SCHEMA": ("REJECT", "T10"),
}


def expectations() -> dict[str, tuple[str, str]]:
    """path -> (verdict, code): the gateway's decisions where they differ, else the oracle mapped."""
    require_shared()
    found: dict[str, tuple[str, str]] = {}
    for line in (SAMPLES / "expected.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        path, oracle = line.split("\t")[:2]
        found[path] = ORACLE_TO_VERDICT[oracle]
    decided = 0
    for line in (DATA / "sarepta_verdicts.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        path, verdict, code = line.split("\t")[:3]
        assert path in found, f"{path} is not a sample"
        found[path] = (verdict, code)
        decided += 1
    assert decided == sum(1 for p in found if p.startswith("sarepta-testcase/"))
    return found


class TestAllSamples:
    def test_every_sample_is_judged_as_decided(self, validator: Validator) -> None:
        """All 271 samples: the verdict and KITH code the gateway must give, file by file."""
        expected = expectations()
        assert len(expected) == 271
        wrong = []
        for path, (verdict, code) in sorted(expected.items()):
            judgement = validator.judge((SAMPLES / path).read_bytes())
            got = ("ACCEPT", "-") if judgement.accepted else ("REJECT", judgement.error.apprec_code or "-")
            if got != (verdict, code):
                wrong.append(f"{path}: expected {verdict} {code}, got {got[0]} {got[1]}")
        assert not wrong, "\n".join(wrong)

    def test_oracle_valid_samples_are_accepted_unless_a_rule_rejects(self, validator: Validator) -> None:
        """No sample the official schemas accept is refused for a schema or format reason."""
        for path, (verdict, code) in expectations().items():
            if verdict == "REJECT" and code in {"T01", "T02", "T10"}:
                continue
            judgement = validator.judge((SAMPLES / path).read_bytes())
            assert judgement.error is None or judgement.error.apprec_code not in {"T01", "T10"}, path

    def test_reasons_name_the_element(self, validator: Validator) -> None:
        """A schema refusal says where (element path) and what is wrong, in plain words."""
        path = "sarepta-testcase/plo/Testcase-mottak-Innleggelsesrapport-v1_5/Case1-15a-Innleggelsesrapport-v1_5.xml"
        error = validator.judge((SAMPLES / path).read_bytes()).error
        assert error is not None and error.apprec_code == "T02"
        assert "/MsgHead/Document/RefDoc/Content/Innleggelsesrapport/InformasjonOmForsendelsen" in error.message
        assert "Forsendelsesstatus" in error.message and "{" not in error.message


class TestCommandLine:
    def test_validate_command_on_all_samples(self, tmp_path: Path) -> None:
        """The CLI prints path, verdict, code and kind per file and exits 1 when any file is refused."""
        expected = expectations()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "validate",
                "--quiet",
                "--schemas",
                str(BUNDLE),
                *[str(SAMPLES / p) for p in sorted(expected)],
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 271
        for line, path in zip(lines, sorted(expected), strict=True):
            shown, verdict, code, kind = line.split("\t")
            assert shown == str(SAMPLES / path)
            assert (verdict, code) == expected[path]
            assert kind != "-" or code == "T10" or code == "T01"

    def test_validate_exit_zero_when_all_accepted(self) -> None:
        """Exit status 0 only when every file is accepted."""
        require_shared()
        path = SAMPLES / "sarepta-eksempel/Epikrise/Epikrise_v1-2/epikrise_v1.2_n.xml"
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "validate", "--schemas", str(BUNDLE), str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0
        assert result.stdout == f"{path}\tACCEPT\t-\tepikrise-1.2\n"


@pytest.mark.parametrize("name", ["ApprDate", "IssueDate"])
def test_plain_words_without_namespaces(validator: Validator, name: str) -> None:
    """The explanation for the damaged Epikrise names the elements without namespace noise."""
    path = "sarepta-testcase/epikrise/Case-mottak-epikrise1_1/Epikrise1-1-case1-2Feil.xml"
    error = validator.judge((SAMPLES / path).read_bytes()).error
    assert error is not None and name in error.message

"""The error tree and its catalogue: one root, stable codes, every code documented in docs/error-codes.md."""

from __future__ import annotations

import re

from gateway.config import PROJECT_ROOT
from gateway.errors import GatewayError, MessageError, SecurityError, all_error_classes

DOC = (PROJECT_ROOT / "docs" / "error-codes.md").read_text(encoding="utf-8")
SOURCES = [p for d in ("gateway", "adapters") for p in (PROJECT_ROOT / d).rglob("*.py")]


class TestTree:
    def test_every_error_descends_from_the_root(self) -> None:
        """No exception class of the project lives outside GatewayError."""
        for path in SOURCES:
            for name, base in re.findall(r"^class (\w+)\((\w*(?:Error|Exception))\)", path.read_text(), re.M):
                if name != "GatewayError":
                    assert base not in ("Exception", "RuntimeError", "ValueError"), f"{path.name}: {name}({base})"

    def test_message_errors_carry_kith_codes(self) -> None:
        """Every message error has an AppRec code and a transport condition, and is never retried."""
        for cls in all_error_classes():
            if issubclass(cls, MessageError):
                assert cls.apprec_code and cls.transport_condition and not cls.retryable, cls
            if issubclass(cls, SecurityError) and cls.apprec_code:
                assert cls.apprec_code.startswith("S"), cls
        assert issubclass(all_error_classes()[0], GatewayError)


class TestCatalogue:
    def test_every_error_event_is_documented(self) -> None:
        """Each error class's event code has a row in docs/error-codes.md."""
        for cls in all_error_classes():
            assert f"`{cls.event}`" in DOC, cls.event

    def test_every_logged_code_is_documented(self) -> None:
        """Every literal code= and every static log event in the source is in the catalogue."""
        found: set[str] = set()
        for path in SOURCES:
            text = path.read_text()
            found |= set(re.findall(r'code="([a-z_.]+)"', text))
            found |= set(re.findall(r'log\.(?:info|warning|error|exception)\(\s*"([a-z_.]+)"', text))
        missing = sorted(code for code in found if f"`{code}`" not in DOC and code not in DOC)
        assert not missing, missing

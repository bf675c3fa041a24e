"""Logs: one line per state change with stable codes, and never a payload, a name or a national id."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from adapters.base import Packet
from gateway.log import configure, redact

from .region import ADMIN, fixture_bytes, region

INNLEGGELSE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"


def patient_secrets(document: bytes) -> list[str]:
    """The national id and the patient's names in a fixture (what must never reach a log)."""
    text = document.decode("utf-8")
    ids = re.findall(r"(?<!\d)\d{11}(?!\d)", text)
    names = re.findall(r"<(?:\w+:)?(?:FamilyName|GivenName)>([^<]+)<", text)
    assert ids and names
    return ids + names


class TestNoPersonalDataInLogs:
    async def test_whole_flow(self, tmp_path: Path) -> None:
        """A message with a national id goes out, in, is answered and correlated; no log line holds it."""
        document = fixture_bytes(INNLEGGELSE)
        secrets = patient_secrets(document)
        with capture_logs() as captured:
            async with region(tmp_path) as r:
                await r.hub.submit(document, ADMIN)
                await r.drain()
                broken = document.replace(b"</MsgId>", b"x</MsgId>")  # refused with E10 on the way in too
                await r.stolav.receive(Packet(broken, "t", "7100701", "7200101", "application/xml", ""), via="memory")
        events = {e["event"] for e in captured}
        assert {"message.accepted", "message.received", "apprec.received", "delivery.sent"} <= events
        dumped = json.dumps(captured, default=str)
        for secret in secrets:
            assert secret not in dumped
        assert "<" not in "".join(str(v) for e in captured for v in e.values() if isinstance(v, str))
        for entry in captured:
            if entry["log_level"] in ("warning", "error"):
                assert entry.get("code"), entry

    def test_redaction_is_the_last_line_of_defence(self) -> None:
        """Even if a line carried a national id or a forbidden key, the renderer writes neither."""
        stream = io.StringIO()
        configure(fmt="json", stream=stream)
        try:
            structlog.get_logger("t").warning(
                "oops",
                code="x",
                note="fnr 13894512345 here",
                payload="<xml/>",
                message_id="533dc50329384157b4498ccef9d9718d",
            )
        finally:
            structlog.reset_defaults()
        line = json.loads(stream.getvalue())
        assert "13894512345" not in line["note"] and line["payload"] == "[redacted]"
        assert line["message_id"] == "533dc50329384157b4498ccef9d9718d"  # hex ids are not national ids
        assert redact(None, "info", {"name": "Kari"})["name"] == "[redacted]"

"""Logs: one line per state change with stable codes, and never a payload, a name or a national id."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from gateway.log import MAX_ITEMS, MAX_STRING, bound, configure, redact
from gateway.transport import Packet

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

    def test_values_that_are_not_strings_are_scrubbed_as_they_render(self) -> None:
        """An exception, a path or bytes holding a national id (an error echoing a file name, say) is
        scrubbed too - the renderer would otherwise write str() of it untouched."""
        scrubbed = redact(
            None,
            "error",
            {"error": ValueError("no patient 13894512345"), "file": Path("/in/13894512345.xml"), "raw": b"13894512345"},
        )
        assert all("13894512345" not in str(v) and "[redacted]" in str(v) for v in scrubbed.values())

    def test_every_value_is_bounded(self) -> None:
        """A megabyte HER-id, a long list, a huge traceback: the rendered line stays small, says what was cut,
        and a national id is redacted whole before anything is cut."""
        stream = io.StringIO()
        configure(fmt="json", stream=stream)
        try:
            structlog.get_logger("t").warning(
                "message.refused",
                code="x",
                sender="7" * 1_000_000,
                receivers=[str(i) for i in range(1000)],
                note="x" * (MAX_STRING - 8) + " 13894512345",
                nested={"deep": "y" * 10_000},
            )
        finally:
            structlog.reset_defaults()
        text = stream.getvalue()
        line = json.loads(text)
        assert len(text) < 20_000
        assert line["sender"] == "7" * MAX_STRING + f"…[+{1_000_000 - MAX_STRING} chars]"
        assert len(line["receivers"]) == MAX_ITEMS + 1 and line["receivers"][-1] == f"…[+{1000 - MAX_ITEMS} items]"
        assert "1389451" not in line["note"] and len(line["nested"]["deep"]) < MAX_STRING + 20
        traceback = "Traceback\n" + "frame\n" * 100_000 + "ValueError: the end"
        cut = bound(None, "error", {"event": "e", "exception": traceback, "short": "ok", "n": 3})
        assert cut["exception"].startswith("Traceback") and cut["exception"].endswith("ValueError: the end")
        assert len(cut["exception"]) < 9000 and (cut["short"], cut["n"]) == ("ok", 3)

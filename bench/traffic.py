"""Synthetic traffic for the benchmarks: the Innleggelsesrapport fixture (a municipality's home care to
St. Olavs, copy to the legevakt) sent from each of the 13 municipalities in turn, each with a new MsgId."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = (ROOT / "fixtures/messages/plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml").read_bytes()
_MSGID = re.compile(rb"<MsgId>[^<]+</MsgId>")
MUNICIPALITIES = [(f"{7100000 + i * 100}", f"{7100000 + i * 100 + 1}") for i in range(1, 14)]


def message(n: int) -> bytes:
    """Message number ``n``: from municipality n mod 13, a fresh MsgId."""
    org, service = MUNICIPALITIES[n % len(MUNICIPALITIES)]
    body = TEMPLATE.replace(b"<Id>7100700</Id>", f"<Id>{org}</Id>".encode())
    body = body.replace(b"<Id>7100701</Id>", f"<Id>{service}</Id>".encode())
    return _MSGID.sub(f"<MsgId>{uuid.uuid4()}</MsgId>".encode(), body, count=1)

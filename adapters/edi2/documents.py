"""The business document as NHN's Meldingstjener takes it, and the AppRecs the gateway hands the adapter.

NHN takes the message XML as UTF-8 whose first line declares it (``<?xml version="1.0" encoding="UTF-8"?>``)
and refuses anything else with 400. The gateway accepts ISO-8859-1, UTF-8 with or without a declaration and
UTF-16 (gateway/xml.py), so :func:`as_utf8` re-encodes character for character and writes the declaration;
nothing else in the document changes. The gateway judged the document at submit, so only its declaration is
read here, never the whole tree.
"""

from __future__ import annotations

import codecs
import re

from gateway.errors import GatewayError
from gateway.xml import parse

__all__ = ["OwnAppRec", "as_utf8", "read_own_apprec"]

_UTF8_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
# the declaration at the very start: its version and the rest of its pseudo-attributes (encoding, standalone)
_DECLARATION = re.compile(r"""^<\?xml(?=\s)(\s+version\s*=\s*["'][^"']*["'])?([^?]*)\?>""")
_ENCODING = re.compile(r"""\s+encoding\s*=\s*["'][^"']*["']""")
_DECLARED = re.compile(rb"""^<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")

#: (OriginalMsgId, status 1/2/3, the 8221 errors as (code, text))
OwnAppRec = tuple[str, str, tuple[tuple[str, str], ...]]


def as_utf8(xml: bytes) -> bytes:
    """The document as UTF-8 with a declaration that says so (added when it had none, or none with an
    encoding); a byte-order mark is dropped."""
    if xml.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = xml.decode("utf-16")
    else:
        body = xml.removeprefix(codecs.BOM_UTF8)
        declared = _DECLARED.match(body)
        encoding = declared.group(1).decode("ascii") if declared else "utf-8"
        text = body.decode(encoding)
    return _declared_utf8(text.removeprefix("\ufeff")).encode("utf-8")


def _declared_utf8(text: str) -> str:
    found = _DECLARATION.match(text)
    if found is None:
        return f"{_UTF8_DECLARATION}\n{text}"
    version = found.group(1) or ' version="1.0"'
    rest = _ENCODING.sub("", found.group(2)).rstrip()  # standalone stays; the encoding is ours to say
    return f'<?xml{version} encoding="UTF-8"{rest}?>{text[found.end() :]}'


def read_own_apprec(xml: bytes) -> OwnAppRec | None:
    """OriginalMsgId, status and errors of an AppRec the gateway built (trusted: never a peer's)."""
    try:
        root = parse(xml).root
    except GatewayError:
        return None
    status = root.find("{*}Status")
    original = root.find("{*}OriginalMsgId/{*}Id")
    if status is None or original is None or not (original.text or "").strip():
        return None
    errors = tuple(
        ((e.get("V") or "").strip(), (e.get("OT") or e.get("DN") or "").strip()) for e in root.findall("{*}Error")
    )
    return (original.text or "").strip(), (status.get("V") or "").strip(), errors

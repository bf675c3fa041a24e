"""The one hardened XML parser and serializer of the gateway.

Every byte string that claims to be a KITH message goes through :func:`parse`. It never reads a DTD, never
resolves an entity, never touches the network, refuses documents that carry a DOCTYPE at all, and refuses
anything over the configured size before the parser sees it. The encoding comes from the XML declaration
or the byte-order mark, so ISO-8859-1 and UTF-8 (with or without BOM) read alike; a document whose bytes do
not match its declared encoding is refused, never guessed at.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from lxml import etree

from gateway.errors import ForbiddenMarkup, MessageTooLarge, NotWellFormed, UnreadableEncoding

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ParsedDocument",
    "localname",
    "namespace",
    "parse",
    "serialize",
]

#: Default size cap (bytes) for one message; configurable as ``limits.max_message_bytes``.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024

# A DOCTYPE can only stand in the prolog, before the root element. Scanning the prolog's bytes refuses it
# in every ASCII-compatible encoding before libxml2 runs; the docinfo check after parsing catches UTF-16.
_FIRST_ELEMENT = re.compile(rb"<[A-Za-z_:]")
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)

_local = threading.local()


def _parser() -> etree.XMLParser:
    # lxml parsers are not safe to share between threads; one per thread, created once.
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            collect_ids=False,
        )
        _local.parser = parser
    return parser


@dataclass(frozen=True)
class ParsedDocument:
    """A parsed message: the tree, its declared encoding and the exact bytes it came from."""

    root: etree._Element
    encoding: str
    raw: bytes = b""

    @property
    def tree(self) -> etree._ElementTree:
        return self.root.getroottree()


def parse(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ParsedDocument:
    """Parse one message, or raise a T01 ``NotWellFormed`` (or subclass) saying what is wrong."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("parse() takes bytes; text has already lost its encoding")
    data = bytes(data)
    if len(data) > max_bytes:
        raise MessageTooLarge(f"The message is {len(data)} bytes; this gateway accepts at most {max_bytes} bytes.")
    if not data.strip():
        raise NotWellFormed("The message is empty.")
    first = _FIRST_ELEMENT.search(data)
    if _DOCTYPE.search(data, 0, first.start() if first else len(data)):
        raise ForbiddenMarkup(
            "The document contains a DOCTYPE or markup declaration; KITH messages must not carry one "
            "and this gateway does not read them."
        )
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise _not_well_formed(exc) from None
    except (LookupError, ValueError) as exc:  # unknown encoding name, or bytes the codec refuses
        raise UnreadableEncoding(f"The document cannot be decoded: {exc}.") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise ForbiddenMarkup("The document contains a DOCTYPE; KITH messages must not carry one.")
    return ParsedDocument(root=root, encoding=docinfo.encoding or "UTF-8", raw=data)


def _not_well_formed(exc: etree.XMLSyntaxError) -> NotWellFormed:
    line, column = exc.position if exc.position else (0, 0)
    text = str(exc.msg or exc).strip()
    # libxml2 appends ", line N, column M" itself; keep one position, said once
    text = re.sub(r",? line \d+, column \d+$", "", text)
    lowered = text.lower()
    if "encoding" in lowered or "input conversion" in lowered or "not proper utf-8" in lowered:
        return UnreadableEncoding(
            f"The document's bytes do not match its declared encoding (line {line}, column {column}): {text}."
        )
    if "entity" in lowered and "not defined" in lowered:
        return ForbiddenMarkup(f"The document uses an undeclared entity (line {line}, column {column}): {text}.")
    return NotWellFormed(f"The document is not well-formed XML (line {line}, column {column}): {text}.")


def serialize(root: etree._Element, *, encoding: str = "UTF-8") -> bytes:
    """Serialize a tree the gateway built itself (an AppRec), with an XML declaration."""
    data: bytes = etree.tostring(root, xml_declaration=True, encoding=encoding)
    return data


def localname(element: etree._Element) -> str:
    """The element's name without its namespace."""
    return str(etree.QName(element).localname)


def namespace(element: etree._Element) -> str:
    """The element's namespace URI, or "" when it has none."""
    return etree.QName(element).namespace or ""

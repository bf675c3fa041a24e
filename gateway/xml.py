"""The one hardened XML parser and serializer of the gateway.

Every byte string that claims to be a KITH message goes through :func:`parse`. Three layers keep hostile
input away from anything but the document itself:

* **The parser cannot open anything.** libxml2 reads an external DTD subset or a parameter entity even with
  ``load_dtd=False``, so every parser carries a resolver that answers each request for an external
  resource with an empty document: no file is opened, no device read, no network touched, whatever the
  document says and however it is encoded.
* **A DOCTYPE is refused**, before parsing when the prolog shows one (in every accepted encoding, behind
  comments and processing instructions too) and after parsing from the document info.
* **Only known encodings.** UTF-8 (with or without BOM), ISO-8859-1/-15, windows-1252, US-ASCII and UTF-16
  with a byte-order mark. UTF-16 without a BOM, UCS-4, EBCDIC and every other declared encoding (UTF-7 can
  hide markup from a byte scan) are refused, and so is a document whose bytes do not match its
  declaration: never guessed at.

The size cap is applied first, before any of this.
"""

from __future__ import annotations

import codecs
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

#: Declared encodings accepted in an ASCII-compatible document (Python codec names after lookup).
_ASCII_COMPATIBLE = frozenset({"utf-8", "iso8859-1", "iso8859-15", "cp1252", "ascii"})
_UTF16 = frozenset({"utf-16", "utf-16-le", "utf-16-be"})
_DECLARATION = re.compile(rb"^<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]{1,40})[\"']")
# the parts of a prolog that may come before the root element: white space, the declaration, PIs, comments
_PROLOG_ITEM = re.compile(r"\s+|<\?.*?\?>|<!--.*?-->", re.DOTALL)

_local = threading.local()


class _NothingExternal(etree.Resolver):  # type: ignore[misc]
    """Answers every request for an external resource (DTD subset, entity, XInclude) with nothing."""

    def resolve(self, system_url: str, public_id: str, context: object) -> object:
        return self.resolve_string("", context)


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
        parser.resolvers.add(_NothingExternal())
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
    if _has_doctype(_prolog_text(data)):
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


def _prolog_text(data: bytes) -> str:
    """The document's start as text, in the encoding its first bytes and declaration give - or the
    refusal of an encoding this gateway does not read (XML 1.0 appendix F, "autodetection")."""
    head = data[:4]
    if head in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\x00<", b"<\x00\x00\x00"):
        raise UnreadableEncoding("The document is in UCS-4 (UTF-32); this gateway reads UTF-8, ISO-8859-1 and UTF-16.")
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        text = data.decode("utf-16", errors="replace")  # the BOM says which byte order, and is dropped
        _check_declared(text[:256].encode("ascii", errors="replace"), _UTF16)
        return text
    if head[:2] in (b"\x00<", b"<\x00"):
        raise UnreadableEncoding("The document looks like UTF-16 without a byte-order mark; UTF-16 needs one.")
    if head == b"\x4c\x6f\xa7\x94":
        raise UnreadableEncoding("The document is in EBCDIC; this gateway reads UTF-8, ISO-8859-1 and UTF-16.")
    body = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    _check_declared(body, frozenset({"utf-8"}) if body is not data else _ASCII_COMPATIBLE)
    return body.decode("latin-1")  # byte for byte: markup is ASCII in every accepted encoding


def _check_declared(start: bytes, accepted: frozenset[str]) -> None:
    """The encoding the XML declaration names must be one the first bytes allow."""
    match = _DECLARATION.match(start)
    if match is None:
        return
    name = match.group(1).decode("ascii")
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        canonical = ""
    if canonical not in accepted:
        raise UnreadableEncoding(
            f"The document declares encoding {name!r}, which this gateway does not read here; "
            "use UTF-8, ISO-8859-1 or UTF-16 with a byte-order mark."
        )


def _has_doctype(text: str) -> bool:
    """Whether markup declarations (``<!DOCTYPE``, ``<!ENTITY`` ...) stand before the root element."""
    position = 0
    while True:
        item = _PROLOG_ITEM.match(text, position)
        if item is None:  # an unclosed comment is left to the parser to report
            return text.startswith("<!", position) and not text.startswith("<!--", position)
        position = item.end()


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

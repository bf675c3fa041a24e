"""The catalog of message kinds (schemas/catalog.toml) and the identification of a parsed document.

A document is identified by its root: ``MsgHead`` documents by the namespace and root of their first
``Document/RefDoc/Content`` payload, stand-alone ``Message`` and ``AppRec`` documents by the root's
namespace. Anything else is a kind this gateway does not support (T10).
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lxml import etree

from gateway.errors import ConfigError, UnsupportedMessage
from gateway.xml import localname, namespace

__all__ = ["MSGHEAD_NS", "Catalog", "Identified", "MessageKind", "load_catalog"]

MSGHEAD_NS = "http://www.kith.no/xmlstds/msghead/2006-05-24"

Family = Literal["msghead", "message", "apprec"]


@dataclass(frozen=True)
class MessageKind:
    name: str
    title: str
    family: Family
    namespace: str
    root: str
    types: tuple[str, ...]
    version: str
    xsd: str
    apprec: str | None = None
    own_xsd: str | None = None
    sender: str | None = None
    receiver: str | None = None
    copies: str | None = None
    patient: str | None = None
    patient_required: bool = False
    emergency: str | None = None

    def type_matches(self, type_code: str | None) -> bool:
        """Whether a Type code is one this kind is sent with (a mismatch is logged, never rejected)."""
        if not self.types:
            return True
        return type_code is not None and any(fnmatch.fnmatchcase(type_code, pattern) for pattern in self.types)


@dataclass(frozen=True)
class EnvelopeSchema:
    namespace: str
    root: str
    xsd: str
    own_xsd: str


@dataclass(frozen=True)
class Identified:
    """What a document is: its kind and the element holding the business content."""

    kind: MessageKind
    payload: etree._Element


class Catalog:
    """Every supported kind, looked up by (namespace, root)."""

    def __init__(self, kinds: list[MessageKind], envelope: EnvelopeSchema, source: Path | None = None) -> None:
        self.kinds = tuple(kinds)
        self.envelope = envelope
        self.source = source
        self._by_key: dict[tuple[str, str], MessageKind] = {}
        for kind in kinds:
            key = (kind.namespace, kind.root)
            if key in self._by_key:
                raise ConfigError(f"Catalog lists {kind.root} in {kind.namespace} twice.")
            self._by_key[key] = kind
        self._by_name = {k.name: k for k in kinds}

    def by_name(self, name: str) -> MessageKind:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no message kind named {name!r} in the catalog") from None

    def identify(self, root: etree._Element) -> Identified:
        """Find the kind of a parsed document, or raise ``UnsupportedMessage`` (T10) saying why."""
        ns, name = namespace(root), localname(root)
        if (ns, name) == (self.envelope.namespace, self.envelope.root):
            payload = _first_payload(root)
            if payload is None:
                raise UnsupportedMessage(
                    "The MsgHead carries no XML business document in Document/RefDoc/Content; "
                    "this gateway only routes XML payloads."
                )
            key = (namespace(payload), localname(payload))
            kind = self._by_key.get(key)
            if kind is None or kind.family != "msghead":
                raise UnsupportedMessage(
                    f"The MsgHead carries {_describe(payload)}, which is not a message kind this gateway supports."
                )
            return Identified(kind, payload)
        kind = self._by_key.get((ns, name))
        if kind is None or kind.family == "msghead":
            raise UnsupportedMessage(
                f"The document is {_describe(root)}, which is not a KITH message kind this gateway supports."
            )
        return Identified(kind, root)


def _first_payload(msghead: etree._Element) -> etree._Element | None:
    for content in msghead.iterfind(f"{{{MSGHEAD_NS}}}Document/{{{MSGHEAD_NS}}}RefDoc/{{{MSGHEAD_NS}}}Content"):
        for child in content:
            if isinstance(child.tag, str):
                return child
    return None


def _describe(element: etree._Element) -> str:
    """The root as a refusal names it - the sender's own name and namespace, cut to a readable length."""
    name, ns = _quoted(localname(element)), _quoted(namespace(element))
    return f"a {name} element" + (f" in namespace {ns}" if ns else " without a namespace")


def _quoted(text: str, most: int = 200) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def load_catalog(path: Path) -> Catalog:
    """Read schemas/catalog.toml (or another catalog) into a :class:`Catalog`."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read the message catalog {path}: {exc}.") from None
    kinds: list[MessageKind] = []
    for i, entry in enumerate(data.get("kind", [])):
        try:
            kinds.append(MessageKind(**{**entry, "types": tuple(entry.get("types", ()))}))
        except TypeError as exc:
            raise ConfigError(f"Catalog {path}, kind #{i + 1}: {exc}.") from None
    try:
        envelope = EnvelopeSchema(**data["envelope"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"Catalog {path} has no valid [envelope] table: {exc}.") from None
    return Catalog(kinds, envelope, path)

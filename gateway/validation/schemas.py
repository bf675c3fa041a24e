"""Schema validation: every schema compiled once, lxml on the hot path, xmlschema to explain a failure.

The official bundle (``[schemas] bundle``) mixes same-folder names, relative paths and absolute URLs in its
``xs:import``s, because upstream resolves them through an XMLSpy catalog. Here every import is resolved
offline by file name inside the bundle. All schemas of the bundle are compiled into one lxml schema set at
start-up; a MsgHead's ``Content`` is ``processContents="strict"``, so the envelope and its payload are
checked in one pass.

Without a bundle (or for a kind whose schema the bundle lacks) the project's own XSDs in ``schemas/``
still check the MsgHead envelope and AppRecs; :attr:`SchemaSet.unchecked` names the kinds whose business
content then goes unchecked, and the gateway says so at start-up.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from lxml import etree

from gateway.config import resource_dir
from gateway.errors import ConfigError, SchemaInvalid
from gateway.model.kinds import Catalog, MessageKind
from gateway.xml import ParsedDocument

__all__ = ["OWN_SCHEMAS", "SchemaSet"]

#: The project's own XSDs (MsgHead envelope, AppRec 1.0/1.1), shipped with the package.
OWN_SCHEMAS = resource_dir("schemas")

_XS = "http://www.w3.org/2001/XMLSchema"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_MAX_EXPLAINED = 3


class _FileIndex:
    """Schema files of one folder tree, by base name and by target namespace."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.by_name: dict[str, Path] = {}
        self.by_namespace: dict[str, Path] = {}
        for dirpath, _dirs, files in os.walk(self.folder):
            for filename in sorted(files):
                if not filename.endswith(".xsd"):
                    continue
                path = Path(dirpath) / filename
                if filename in self.by_name:
                    raise ConfigError(f"Schema bundle {folder} holds two files named {filename}.")
                self.by_name[filename] = path
                try:
                    tns = etree.parse(str(path), _plain_parser()).getroot().get("targetNamespace")
                except etree.XMLSyntaxError as exc:
                    raise ConfigError(f"Schema {path} is not well-formed: {exc}.") from None
                if tns:
                    self.by_namespace[tns] = path

    def locate(self, url: str) -> Path | None:
        return self.by_name.get(url.replace("\\", "/").rsplit("/", 1)[-1])


def _plain_parser() -> etree.XMLParser:
    return etree.XMLParser(no_network=True, load_dtd=False, resolve_entities=False)


class _ByNameResolver(etree.Resolver):  # type: ignore[misc]
    def __init__(self, index: _FileIndex) -> None:
        super().__init__()
        self._index = index

    def resolve(self, system_url: str, public_id: str, context: Any) -> Any:
        path = self._index.locate(system_url or "")
        return self.resolve_filename(str(path), context) if path else None


class _Compiled:
    """One compiled schema set: lxml now, xmlschema (for explanations) on the first failure."""

    def __init__(self, index: _FileIndex, files: list[Path]) -> None:
        self.index = index
        imports = "".join(
            f'<xs:import namespace="{ns}" schemaLocation="{path.as_uri()}"/>'
            for ns, path in sorted(index.by_namespace.items())
            if path in files and ns != _XML_NS
        )
        self.wrapper = f'<xs:schema xmlns:xs="{_XS}" targetNamespace="urn:sio-gateway:schema-set">{imports}</xs:schema>'
        parser = _plain_parser()
        parser.resolvers.add(_ByNameResolver(index))
        base = (index.folder / "sio-gateway-schema-set.xsd").as_uri()
        try:
            doc = etree.fromstring(self.wrapper.encode(), parser, base_url=base)
            self.lxml = etree.XMLSchema(doc)
        except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
            raise ConfigError(f"The schemas in {index.folder} do not compile: {exc}.") from None
        self._lock = threading.Lock()
        self._explainer: Any = None

    def errors(self, doc: ParsedDocument) -> list[str] | None:
        """None when the document is valid, else lxml's errors (line: message)."""
        with self._lock:
            if self.lxml.validate(doc.tree):
                return None
            return [f"line {e.line}: {e.message}" for e in self.lxml.error_log][:_MAX_EXPLAINED]

    def explain(self, doc: ParsedDocument) -> list[str]:
        """Plain-words reasons with element paths, from xmlschema (slow; failure path only)."""
        with self._lock:
            if self._explainer is None:
                import xmlschema  # the failure path only; keeps start-up of every process light

                index = self.index
                self._explainer = xmlschema.XMLSchema(
                    self.wrapper,
                    base_url=str(index.folder),
                    uri_mapper=lambda url: str(index.locate(url) or url),
                )
            explainer = self._explainer
        reasons: list[str] = []
        for error in explainer.iter_errors(doc.tree):
            reasons.append(_plain(error.path, error.reason or error.message))
            if len(reasons) >= _MAX_EXPLAINED:
                break
        return reasons


#: Documents with more elements than this are explained by lxml's error lines alone: xmlschema walks the
#: whole tree in pure Python (a million elements took 40 s), which nobody should be able to ask for.
MAX_EXPLAINED_ELEMENTS = 20000


def _explainable(doc: ParsedDocument) -> bool:
    return not any(i >= MAX_EXPLAINED_ELEMENTS for i, _ in enumerate(doc.root.iter()))


_QUALIFIED = re.compile(r"\{[^}]*\}")
_PREFIXED = re.compile(r"'[A-Za-z_][\w.-]*:([A-Za-z_][\w.-]*)'")


def _plain(path: str | None, reason: str) -> str:
    """'/MsgHead/MsgInfo/Sender: Tag Organisation expected.' - namespaces stripped, one line."""
    where = _QUALIFIED.sub("", path or "") or "/"
    said = _PREFIXED.sub(r"'\1'", _QUALIFIED.sub("", reason)).strip()
    return f"{where}: {' '.join(said.split())}"


class SchemaSet:
    """Every schema the gateway validates with, compiled once at start-up."""

    def __init__(self, catalog: Catalog, bundle: Path | None, own: Path = OWN_SCHEMAS) -> None:
        self.catalog = catalog
        self.bundle = bundle
        own_index = _FileIndex(own)
        own_files = [p for p in own_index.by_name.values()]
        self._own = _Compiled(own_index, own_files)
        self._full: _Compiled | None = None
        bundle_index: _FileIndex | None = None
        if bundle is not None:
            if not bundle.is_dir():
                raise ConfigError(f"Schema bundle {bundle} is not a folder.")
            bundle_index = _FileIndex(bundle)
            self._full = _Compiled(bundle_index, list(bundle_index.by_name.values()))
        self._for_kind: dict[str, _Compiled | None] = {}
        envelope_in_bundle = bool(bundle_index and catalog.envelope.xsd in bundle_index.by_name)
        self.unchecked: list[MessageKind] = []
        for kind in catalog.kinds:
            official = bool(bundle_index and kind.xsd in bundle_index.by_name)
            if official and (kind.family != "msghead" or envelope_in_bundle):
                self._for_kind[kind.name] = self._full
                continue
            # no official schema: the envelope (MsgHead) or the AppRec is still checked with our own XSD
            self._for_kind[kind.name] = self._own if kind.family != "message" else None
            if kind.family != "apprec":
                self.unchecked.append(kind)

    def validate(self, doc: ParsedDocument, kind: MessageKind) -> bool:
        """Raise ``SchemaInvalid`` (T02) explaining what is wrong; return whether a schema checked it."""
        compiled = self._for_kind.get(kind.name)
        if compiled is None:
            return False
        errors = compiled.errors(doc)
        if errors is None:
            return True
        reasons = (compiled.explain(doc) if _explainable(doc) else []) or errors
        raise SchemaInvalid(f"The {kind.title} does not validate against its schema: " + " | ".join(reasons))

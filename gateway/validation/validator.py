"""Judge one message: parse -> identify -> read the envelope -> schema -> AppRec rules.

The order decides which code a message with several faults gets: T01 before T10 before T02 before the
rules (E10, then the sender, the patient E36 and - with a register - the receiver E21). The envelope is
read before the schema is checked, so a rejected message can still be answered when its sender is known.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import MessageError
from gateway.model.envelope import Envelope, read_envelope
from gateway.model.kinds import Catalog, Identified, MessageKind
from gateway.registry import Register
from gateway.validation import rules
from gateway.validation.schemas import SchemaSet
from gateway.xml import DEFAULT_MAX_BYTES, ParsedDocument, parse

__all__ = ["EMERGENCY_PRIORITY", "Judgement", "Validator"]

#: Code 0 of code system 8304 (hastegrad): øyeblikkelig hjelp.
EMERGENCY_PRIORITY = "0"


@dataclass(frozen=True)
class Judgement:
    """The verdict on one message, and everything read before the verdict was reached."""

    document: ParsedDocument | None = None
    identified: Identified | None = None
    envelope: Envelope | None = None
    error: MessageError | None = None
    schema_checked: bool = False

    @property
    def accepted(self) -> bool:
        return self.error is None

    @property
    def kind(self) -> MessageKind | None:
        return self.identified.kind if self.identified else None

    def raise_for_error(self) -> None:
        if self.error is not None:
            raise self.error


class Validator:
    """Holds the compiled schemas and the catalog; judges messages. Build once, use for every message."""

    def __init__(
        self,
        catalog: Catalog,
        schemas: SchemaSet,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        register: Register | None = None,
    ) -> None:
        self.catalog = catalog
        self.schemas = schemas
        self.max_bytes = max_bytes
        self.register = register

    def judge(self, data: bytes, *, check_receiver: bool = True) -> Judgement:
        """Judge raw message bytes. ``check_receiver`` applies E21 when the validator has a register."""
        try:
            document = parse(data, max_bytes=self.max_bytes)
        except MessageError as exc:
            return Judgement(error=exc)
        try:
            identified = self.catalog.identify(document.root)
        except MessageError as exc:
            return Judgement(document=document, error=exc)
        envelope = read_envelope(identified, document.root)
        found = Judgement(document=document, identified=identified, envelope=envelope)
        try:
            checked = self.schemas.validate(document, identified.kind)
            found = Judgement(document, identified, envelope, None, checked)
            self._apply_rules(envelope, identified, check_receiver=check_receiver)
        except MessageError as exc:
            return Judgement(document, identified, envelope, exc, found.schema_checked)
        return found

    def _apply_rules(self, envelope: Envelope, identified: Identified, *, check_receiver: bool) -> None:
        kind = identified.kind
        rules.check_ids(envelope)
        if kind.family == "apprec":
            return
        rules.check_sender(envelope)
        rules.check_patient(envelope, required=kind.patient_required, emergency=_is_emergency(identified))
        if check_receiver and self.register is not None:
            rules.check_receiver(envelope, self.register)


def _is_emergency(identified: Identified) -> bool:
    kind = identified.kind
    if not kind.emergency:
        return False
    ns = kind.namespace
    path = "/".join(f"{{{ns}}}{step}" for step in kind.emergency.split("/"))
    return any(p.get("V", "").strip() == EMERGENCY_PRIORITY for p in identified.payload.iterfind(f".//{path}"))

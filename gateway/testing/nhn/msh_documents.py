"""The business documents of the simulated Meldingstjener: what it reads from a posted document, and the
AppRec it builds when a receiver answers one.

NHN reads a document's header (MsgId, GenDate, Type) and parties to report them on the message and to
address the AppRec; the simulator does the same through the gateway's catalog, leniently: a document that
is no KITH message the catalog knows is still carried, with nothing read from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.model.apprec import ERROR_OID, ERROR_TEXTS, AppRecError, build_apprec
from gateway.model.envelope import Addressee, Envelope, Ident, read_envelope
from gateway.model.kinds import Catalog
from gateway.xml import parse

if TYPE_CHECKING:
    from gateway.testing.nhn.msh_state import MessageRecord

__all__ = ["AppRecErrorInfo", "AppRecInfo", "AppRecStatus", "DocumentInfo", "apprec_document", "read_document"]

AppRecStatus = Literal["Ok", "Rejected", "OkErrorInMessagePart"]
_STATUS_CODES = {"Ok": "1", "Rejected": "2", "OkErrorInMessagePart": "3"}


# --- the business document ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentInfo:
    """What the simulator reads from a business document: the header fields the API reports, and the
    envelope (parties) when the catalog knows the kind. Lenient: what cannot be read is None."""

    msg_id: str | None = None
    gen_date: str | None = None
    msg_type: str | None = None
    envelope: Envelope | None = field(default=None, repr=False)

    @property
    def gen_date_time(self) -> str | None:
        """GenDate as the API reports it: as written (an offset only if the document has one), a date
        alone completed to midnight, as NHN's DateTime serialisation does."""
        if not self.gen_date:
            return None
        return self.gen_date if "T" in self.gen_date else f"{self.gen_date}T00:00:00"

    @property
    def receiver_her_ids(self) -> list[str]:
        """Primary receiver first, then copy receivers - as NHN reads them from the document (v2)."""
        env = self.envelope
        found = [a.her_id for a in ([env.receiver] if env and env.receiver else []) + list(env.copies if env else ())]
        return [h for h in dict.fromkeys(found) if h]


def read_document(catalog: Catalog, document: bytes) -> DocumentInfo:
    """Read a document's MsgId, GenDate, Type and parties; empty for what is not a known KITH message."""
    try:
        root = parse(document, max_bytes=len(document) + 1).root
        envelope = read_envelope(catalog.identify(root), root)
    except GatewayError:
        return DocumentInfo()
    return DocumentInfo(envelope.msg_id, envelope.gen_date, envelope.msg_type, envelope)


# --- the AppRec ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppRecErrorInfo:
    """One error of an AppRec (code system 8221): as posted, and as NHN reports it back."""

    error_code: str
    details: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "errorCode": self.error_code,
            "details": self.details,
            "description": ERROR_TEXTS.get(self.error_code),
            "oid": ERROR_OID,
        }


@dataclass(frozen=True)
class AppRecInfo:
    status: AppRecStatus
    errors: tuple[AppRecErrorInfo, ...]
    apprec_id: str


def apprec_document(
    catalog: Catalog,
    original: MessageRecord,
    answering: str,
    status: AppRecStatus,
    errors: Sequence[AppRecErrorInfo],
    clock: Clock,
) -> bytes:
    """The AppRec 1.1 NHN builds for an answer: the parties as the original names them (the answering
    receiver PRIM or COP), or by HER-id alone when the original is no message kind the catalog knows."""
    envelope = original.info.envelope
    party, role = None, "PRIM"
    if envelope is not None:
        if envelope.receiver is not None and answering in envelope.receiver.her_ids:
            party = envelope.receiver
        else:
            party = next((c for c in envelope.copies if answering in c.her_ids), None)
            role = "PRIM" if party is None else "COP"
    if envelope is None or envelope.sender is None:
        envelope = Envelope(
            kind=catalog.kinds[0],  # build_apprec reads no field of the kind; an unknown original has none
            msg_type=original.msg_type,
            msg_type_name=None,
            mig_version=None,
            msg_id=original.info.msg_id or original.id,
            gen_date=original.info.gen_date,
            sender=_by_her(original.sender),
            receiver=None,
        )
    return build_apprec(
        envelope,
        version="1.1",
        answering=party or _by_her(answering),
        role=role,
        status=_STATUS_CODES[status],
        errors=tuple(AppRecError(e.error_code, e.details or "") for e in errors),
        now=datetime.fromtimestamp(clock.now(), UTC),
    )


def _by_her(her_id: str) -> Addressee:
    return Addressee(f"HER-id {her_id}", (Ident(her_id, "HER"),))

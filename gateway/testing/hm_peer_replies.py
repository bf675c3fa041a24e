"""What the peer bot's application layer answers: an OK AppRec for an async business message (built with
the gateway's own AppRec 1.0/1.1 builder, so it is schema-valid and names the original's MsgId), and the
default answer to a sync request - the request itself with sender and receiver swapped and a new MsgId.

The bot reads documents with the gateway's catalog and envelope reader: that is the receiving
application's part (HM itself does not read the payload), not the transport the bot cross-checks.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from gateway.config import resource_dir
from gateway.errors import GatewayError
from gateway.model.apprec import build_apprec, read_apprec
from gateway.model.envelope import Envelope, read_envelope
from gateway.model.kinds import MSGHEAD_NS, Catalog, load_catalog
from gateway.xml import parse, serialize

__all__ = ["PeerDocument", "PeerReplies", "swapped_reply"]


@dataclass(frozen=True)
class PeerDocument:
    """What the bot read of a received document (None for what it could not read)."""

    envelope: Envelope | None
    msg_id: str | None
    sender_her: str | None
    apprec_for: str | None = None  # an AppRec: the MsgId it answers
    apprec_status: str | None = None


class PeerReplies:
    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or load_catalog(resource_dir("schemas") / "catalog.toml")

    def read(self, xml: bytes) -> PeerDocument:
        try:
            root = parse(xml).root
            envelope = read_envelope(self.catalog.identify(root), root)
        except GatewayError:
            return PeerDocument(None, None, None)
        if envelope.kind.family == "apprec":
            apprec = read_apprec(envelope, root)
            return PeerDocument(envelope, envelope.msg_id, envelope.sender_her, apprec.original_msg_id, apprec.status)
        return PeerDocument(envelope, envelope.msg_id, envelope.sender_her)

    def ok_apprec(self, original: Envelope, *, own_her: str) -> bytes | None:
        """The OK AppRec (status 1) ``own_her`` sends for ``original``, as its primary or copy receiver;
        None when the original names neither it nor a sender."""
        if original.sender is None:
            return None
        role, answering = "PRIM", original.receiver
        if answering is None or own_her not in answering.her_ids:
            copy = next((c for c in original.copies if own_her in c.her_ids), None)
            if copy is not None:
                role, answering = "COP", copy
        if answering is None:
            return None
        version = original.kind.apprec or "1.0"
        return build_apprec(original, version=version, answering=answering, role=role, status="1")


def swapped_reply(request: bytes) -> bytes:
    """A MsgHead request turned into its reply: Sender and Receiver swapped, a new MsgId and GenDate."""
    root = parse(request).root
    ns = f"{{{MSGHEAD_NS}}}"
    info = root.find(f"{ns}MsgInfo")
    if info is None:
        raise ValueError("not a MsgHead message")
    sender, receiver = info.find(f"{ns}Sender"), info.find(f"{ns}Receiver")
    if sender is None or receiver is None:
        raise ValueError("the MsgHead names no sender or receiver")
    sender_children, receiver_children = list(sender), list(receiver)
    for child in sender_children:
        sender.remove(child)
    for child in receiver_children:
        receiver.remove(child)
    sender.extend(receiver_children)
    receiver.extend(sender_children)
    msg_id = info.find(f"{ns}MsgId")
    if msg_id is not None:
        msg_id.text = str(uuid.uuid4())
    gen_date = info.find(f"{ns}GenDate")
    if gen_date is not None:
        gen_date.text = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    copy = etree.fromstring(etree.tostring(root))  # (a fresh tree: no parser state carried along)
    return serialize(copy)

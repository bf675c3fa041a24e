"""St. Olavs' side of the replay, at the local NHN: a peer sends a document (the simulator's control API),
what each peer has received, and the AppRecs among it - read, to match each to the message it answers by
its OriginalMsgId.

The control API lists what a peer received by NHN's message id, sender and AppRec flag only, so each
AppRec's document is fetched through NHN's own API (``GET /messages/{id}/business-document``) as the
replay's HelseID client ``sio-replay``: a read-only client registered for the region's HER-ids, which
never sends. The same client asks whether the hub has declared its HER-ids at NHN yet (v3: until it has,
NHN refuses what the hub sends for them).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from adapters.edi2.msh import MshClient
from adapters.helseid.client import HelseIdClient
from adapters.helseid.dpop import SigningKey
from gateway.config import resource_dir
from gateway.errors import ChannelLocked, GatewayError, PermanentDeliveryError, TransportError
from gateway.model.apprec import read_apprec
from gateway.model.envelope import read_envelope
from gateway.model.kinds import load_catalog
from gateway.registry import Party
from gateway.testing.nhn.msh_documents import read_document
from gateway.testing.replay_nhn_region import OBSERVER_CLIENT, NhnRegion
from gateway.xml import parse

__all__ = ["NhnSide", "PeerAppRec", "as_sent_by"]

_SENDER = re.compile(rb"<(?P<prefix>(?:[A-Za-z_][\w.-]*:)?)Sender\b[^>]*>.*?</(?P=prefix)Sender\s*>", re.S)


@dataclass(frozen=True)
class PeerAppRec:
    """An AppRec NHN delivered to a peer: its status (KITH 8258), its error codes, when the replay saw it."""

    status: str
    codes: tuple[str, ...]
    seen_at: float  # time.monotonic()


class NhnSide:
    """The replay's hands and eyes at the local NHN: the peers' sends, and what NHN delivered to them."""

    def __init__(self, region: NhnRegion, session: aiohttp.ClientSession) -> None:
        self.region = region
        self.session = session
        key = SigningKey.from_file(region.observer_key)
        helseid = HelseIdClient(region.helseid_url, OBSERVER_CLIENT, key, session=session)
        self.msh = MshClient(region.msh_url, helseid, session=session, api_version="3", source_system="gateway replay")
        self.catalog = load_catalog(resource_dir("schemas") / "catalog.toml")
        #: (peer, OriginalMsgId, answering HER-id) -> the AppRec
        self.apprecs: dict[tuple[str, str, str], PeerAppRec] = {}
        self._read: set[str] = set()

    def msg_id(self, document: bytes) -> str | None:
        """The MsgId NHN reads from a document (None where it reads none) - what its AppRecs refer to."""
        return read_document(self.catalog, document).msg_id

    async def send(self, peer: str, document: bytes, to: Sequence[str]) -> tuple[str | None, str]:
        """``peer`` sends ``document`` to ``to`` through NHN: (NHN's message id, "") or (None, NHN's refusal)."""
        body = {"businessDocument": base64.b64encode(document).decode("ascii"), "receiverHerIds": list(to)}
        async with self.session.post(f"{self.region.msh_url}/_sim/peers/{peer}/messages", json=body) as response:
            answer: dict[str, Any] = await response.json()
        if response.status == 201:
            return str(answer["id"]), ""
        return None, str(answer.get("error", f"HTTP {response.status}"))

    async def hub_declared(self) -> bool:
        """Whether NHN holds a configuration for every local HER-id: then asking for their notifications is
        either allowed or refused as locked by the hub's client (423) - not refused as unconfigured (400)."""
        try:
            await self.msh.notifications(self.region.local_her_ids, offset=0, count=1)
        except ChannelLocked:
            return True
        except (PermanentDeliveryError, TransportError):  # not yet; or NHN busy: ask again
            return False
        return True

    async def poll_apprecs(self) -> None:
        """Read every AppRec a peer received since the last call into :attr:`apprecs`."""
        for peer in self.region.peers:
            async with self.session.get(f"{self.region.msh_url}/_sim/peers/{peer.her_id}/received") as response:
                received: list[dict[str, Any]] = await response.json()
            for entry in received:
                if not entry["isAppRec"] or entry["id"] in self._read:
                    continue
                document = await self.msh.business_document(str(entry["id"]))
                self._read.add(entry["id"])
                apprec = self._read_apprec(document)
                if apprec is not None:
                    original, status, codes = apprec
                    key = (peer.her_id, original, str(entry["senderHerId"]))
                    self.apprecs[key] = PeerAppRec(status, codes, time.monotonic())

    def _read_apprec(self, document: bytes) -> tuple[str, str, tuple[str, ...]] | None:
        try:
            root = parse(document).root
            apprec = read_apprec(read_envelope(self.catalog.identify(root), root), root)
        except GatewayError:
            return None
        if apprec.original_msg_id is None:
            return None
        return apprec.original_msg_id, apprec.status or "", tuple(e.code for e in apprec.errors)

    async def transport_states(self, nhn_id: str) -> dict[str, str]:
        """NHN's transport state of a peer's message, per receiver (Unconfirmed until the hub has it)."""
        return {s.receiver_her: s.transport_state for s in await self.msh.status(nhn_id)}


def as_sent_by(document: bytes, was: Party, now: Party) -> bytes:
    """``document`` as ``now`` would send it: the HER-ids of ``was`` (the service and its organisation) in
    the first ``Sender`` element replaced by those of ``now``; names and everything else unchanged.

    NHN carries a message only from the party that sends it, and a gateway refuses a message whose
    sender is not the party the transport names (as a spoofing attempt) - so a fixture of a local sender,
    pushed by a peer to show what the hub answers, must name that peer as its sender."""
    pairs = ((was.her_id, now.her_id), (was.organisation.her_id, now.organisation.her_id))

    def swap(match: re.Match[bytes]) -> bytes:
        block = match.group(0)
        for old, new in pairs:
            block = re.sub(rb">\s*" + re.escape(old.encode()) + rb"\s*<", b">" + new.encode() + b"<", block)
        return block

    return _SENDER.sub(swap, document, count=1)

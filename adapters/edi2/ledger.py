"""What the edi2 adapter keeps in the gateway's store (its :class:`~gateway.transport.TransportState`):
the notification offset it has processed, NHN's ids of the messages it sent and awaits an outcome for, and
NHN's ids of the messages it received, so that the gateway's AppRec for one goes back as NHN's apprec call.

Keys: ``offset``; ``out:<NHN id>`` -> the gateway's message id and the receiver; ``pending`` (v2 only: the
NHN ids whose status is polled, oldest first, at most :data:`MAX_PENDING`); ``in:<MsgId>`` -> the NHN ids a
message with that MsgId came with, each with NHN's sender and receiver HER-ids.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from gateway.log import get_logger
from gateway.transport import TransportState

__all__ = ["MAX_PENDING", "Ledger", "Sent"]

log = get_logger(__name__)

#: v2 keeps the NHN ids of what it sent and awaits an outcome for in one list; beyond this the oldest go
MAX_PENDING = 10000
#: one MsgId arriving more often than this (resent, or copies to several of our HER-ids): the oldest go
_MAX_ARRIVALS = 10


@dataclass(frozen=True)
class Sent:
    """A message the gateway sent through NHN: its own message id (``reference``) and the receiver."""

    reference: str
    receiver: str


class Ledger:
    def __init__(self, state: TransportState) -> None:
        self.state = state
        self._pending_lock = asyncio.Lock()  # one process's sends must not lose each other's entries

    # -- the notification log -------------------------------------------------------------------------

    async def offset(self) -> int:
        return int(await self.state.get("offset") or 0)

    async def processed(self, offset: int) -> None:
        await self.state.set("offset", str(offset))

    # -- what we sent ---------------------------------------------------------------------------------

    async def sent(self, nhn_id: str, reference: str, receiver: str, *, poll: bool) -> None:
        """Remember a message NHN took; ``poll`` (v2) puts it on the list whose status is polled."""
        await self.state.set(f"out:{nhn_id}", json.dumps({"reference": reference, "receiver": receiver}))
        if not poll:
            return
        async with self._pending_lock:
            pending = await self.pending()
            if len(pending) >= MAX_PENDING:
                log.warning("edi2.pending_trimmed", code="edi2.pending_trimmed", dropped=pending[0])
            await self.state.set("pending", json.dumps([*pending[-(MAX_PENDING - 1) :], nhn_id]))

    async def sent_record(self, nhn_id: str) -> Sent | None:
        known = await self.state.get(f"out:{nhn_id}")
        if known is None:
            return None
        data = json.loads(known)
        return Sent(str(data["reference"]), str(data["receiver"]))

    async def settled(self, nhn_id: str) -> None:
        """Nothing more is to come for that message: forget it."""
        await self.state.set(f"out:{nhn_id}", None)

    async def pending(self) -> list[str]:
        return [str(m) for m in json.loads(await self.state.get("pending") or "[]")]

    async def drop_pending(self, nhn_ids: set[str]) -> None:
        async with self._pending_lock:  # sends that came in meanwhile stay on the list
            await self.state.set("pending", json.dumps([m for m in await self.pending() if m not in nhn_ids]))

    # -- what we received -----------------------------------------------------------------------------

    async def received(self, msg_id: str, nhn_id: str, *, sender: str, receiver: str) -> None:
        """Remember which NHN message a MsgId came with (before the gateway takes it, so that its AppRec
        finds NHN's id even when this process dies right after)."""
        arrivals = [a for a in await self._arrivals(msg_id) if a[0] != nhn_id]
        arrivals.append([nhn_id, sender, receiver])
        await self.state.set(f"in:{msg_id}", json.dumps(arrivals[-_MAX_ARRIVALS:]))

    async def answered_by(self, original_msg_id: str, *, to_her: str, from_her: str) -> str | None:
        """NHN's id of the received message an AppRec answers: it goes ``to_her`` (the original's sender)
        ``from_her`` (the original's receiver). The gateway names the parties by the message's own HER-ids,
        NHN by the HER-ids it routes on - a person's under an office, a service's under its organisation -
        so one of the two agreeing is enough; both agreeing wins."""
        arrivals = await self._arrivals(original_msg_id)
        for wanted in ((True, True), (False, True), (True, False)):
            for nhn_id, sender, receiver in reversed(arrivals):
                if (not wanted[0] or sender == to_her) and (not wanted[1] or receiver == from_her):
                    return str(nhn_id)
        return None

    async def _arrivals(self, msg_id: str) -> list[list[str]]:
        return [list(map(str, a)) for a in json.loads(await self.state.get(f"in:{msg_id}") or "[]")]

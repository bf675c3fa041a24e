"""What the edi2 adapter keeps in the gateway's store (its :class:`~gateway.transport.TransportState`):
the notification offset it has processed, NHN's ids of the messages it sent and awaits an outcome for, and
NHN's ids of the messages it received, so that the gateway's AppRec for one goes back as NHN's apprec call.

Keys: ``offset``; ``catch_up`` (v3: the HER-ids left out of the log for a while - another client held
them - from which offset, and up to which one they are read again once back); ``out:<NHN id>`` -> the
gateway's message id and the receiver; ``pending`` (v2 only: the NHN ids whose status is polled, oldest
first, at most :data:`MAX_PENDING`); ``in:<MsgId>`` -> the NHN ids a message with that MsgId came with, each
with NHN's sender and receiver HER-ids.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import NamedTuple

from gateway.log import get_logger
from gateway.transport import TransportState

__all__ = ["MAX_PENDING", "Arrival", "Ledger", "Sent"]

log = get_logger(__name__)

#: v2 keeps the NHN ids of what it sent and awaits an outcome for in one list; beyond this the oldest go
MAX_PENDING = 10000
#: one MsgId arriving more often than this (resent, or copies to several of our HER-ids): the oldest go
_MAX_ARRIVALS = 10


class Arrival(NamedTuple):
    """A message NHN gave the gateway: NHN's id, and the sender and receiver HER-ids NHN named."""

    nhn_id: str
    sender: str
    receiver: str


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

    async def left_out(self, her_id: str) -> None:
        """``her_id`` is no longer followed: what comes for it from the processed offset on is read again
        once it is back (the first time it was left out counts)."""
        marks = await self._catch_up_marks()
        marks.setdefault(her_id, [await self.offset(), None])
        await self.state.set("catch_up", json.dumps(marks))

    async def back(self, her_id: str) -> None:
        """``her_id`` is followed again: it is to be read up to where the others have got."""
        marks = await self._catch_up_marks()
        if her_id in marks and marks[her_id][1] is None:
            marks[her_id][1] = await self.offset()
            await self.state.set("catch_up", json.dumps(marks))

    async def catch_ups(self) -> dict[str, tuple[int, int]]:
        """The HER-ids that are back and what they missed: (from offset, up to offset)."""
        marks = await self._catch_up_marks()
        return {h: (int(m[0] or 0), int(m[1])) for h, m in marks.items() if m[1] is not None}

    async def caught_up(self, her_id: str, offset: int | None) -> None:
        """Read for ``her_id`` up to ``offset`` - or, None, all of it."""
        marks = await self._catch_up_marks()
        if offset is None:
            marks.pop(her_id, None)
        elif her_id in marks:
            marks[her_id][0] = offset
        await self.state.set("catch_up", json.dumps(marks) if marks else None)

    async def _catch_up_marks(self) -> dict[str, list[int | None]]:
        return dict(json.loads(await self.state.get("catch_up") or "{}"))

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
        arrivals = [list(a) for a in await self._arrivals(msg_id) if a.nhn_id != nhn_id]
        arrivals.append([nhn_id, sender, receiver])
        await self.state.set(f"in:{msg_id}", json.dumps(arrivals[-_MAX_ARRIVALS:]))

    async def answered_by(self, original_msg_id: str, *, to_her: str, from_her: str) -> Arrival | None:
        """The received message an AppRec answers: it goes ``to_her`` (the original's sender, which the gateway
        takes from NHN's sender - it must be that one) ``from_her`` (the original's receiver, which the
        gateway may name by the message's own HER-id where NHN routed it to another of the same chain: the
        arrival for that receiver wins, else the latest one from that sender). The AppRec is posted as the
        arrival's receiver, the HER-id NHN gave it to."""
        from_sender = [a for a in await self._arrivals(original_msg_id) if a.sender == to_her]
        exact = [a for a in from_sender if a.receiver == from_her]
        chosen = exact or from_sender
        return chosen[-1] if chosen else None

    async def _arrivals(self, msg_id: str) -> list[Arrival]:
        return [Arrival(*map(str, a)) for a in json.loads(await self.state.get(f"in:{msg_id}") or "[]")]

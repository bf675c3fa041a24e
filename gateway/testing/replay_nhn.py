"""``gateway replay`` (``--via nhn``, the default): the fixtures through the hub and the local NHN of
replay_nhn_region.py, each from its sender.

* A fixture of a local sender goes to the hub's API, as its EHR would hand it in, and is followed in the
  hub until every receiver has answered: a St. Olavs receiver through NHN's AppRec info, a local one by
  the hub's own AppRec.
* A fixture of a St. Olavs party is sent by that peer through NHN (the control API) and followed until
  the hub has it (its message list) and NHN has delivered the hub's AppRec back to the peer (what the
  peer received, matched by OriginalMsgId); NHN's transport state for each receiver is shown.
* A broken fixture must be refused by the hub at submit with its code. It is then also sent to each local
  receiver by a St. Olavs peer - as a sender that does not validate would, naming the peer as its sender
  (see :func:`~gateway.testing.replay_nhn_side.as_sent_by`) - to show what the hub answers: a negative
  AppRec with the code, delivered to the peer, or a refusal at the transport for what it cannot read. A
  St. Olavs receiver is not tried (NHN's scripted peers judge nothing), and NHN itself refuses to carry a
  message to a HER-id it does not know.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import Settings
from gateway.registry import Party, Register
from gateway.testing.replay_follow import UNREADABLE, Fixture, Outcome, settle, submit
from gateway.testing.replay_nhn_region import NhnRegion, launch_nhn_region, stop_nhn_region, wait_until_up
from gateway.testing.replay_nhn_side import NhnSide, as_sent_by

__all__ = ["replay_nhn"]

_INBOUND_OK = {"received", "delivered"}
_START_S = 60.0  # a bound for a stuck start, generous for a busy machine


def replay_nhn(
    fixtures: list[Fixture],
    settings: Settings,
    register: Register,
    work_dir: Path,
    *,
    timeout_s: float,
    protection: str,
) -> tuple[list[Outcome], list[int]]:
    """Start the hub and the local NHN, run every fixture through them, stop them; outcomes, exit codes."""
    region = launch_nhn_region(settings, register, work_dir, protection=protection)
    try:
        outcomes = asyncio.run(_Drive(region).run(fixtures, timeout_s))
    finally:
        codes = stop_nhn_region(region)
    return outcomes, codes


@dataclass
class _PeerSent:
    """One document a peer sent through NHN, and what is still awaited of its receivers."""

    outcome: Outcome
    peer: str
    nhn_id: str
    msg_id: str | None
    receivers: list[str]
    started: float = field(default_factory=time.monotonic)
    answered: dict[str, tuple[str, bool]] = field(default_factory=dict)  # receiver -> (said, fits)

    @property
    def valid(self) -> bool:
        return self.outcome.expected == "acknowledged"


@dataclass
class _HubView:
    """What the hub holds, read once per round: received messages and refusals at the transport."""

    inbound: dict[tuple[str, str, str], dict[str, Any]]  # (sender, MsgId, receiver) -> message
    refusals: dict[tuple[str, str], dict[str, Any]]  # (transport message id, receiver) -> refusal


class _Drive:
    def __init__(self, region: NhnRegion) -> None:
        self.region = region
        self.peers = {p.her_id: p for p in region.peers}

    async def run(self, fixtures: list[Fixture], timeout_s: float) -> list[Outcome]:
        await wait_until_up(self.region)
        headers = {"Authorization": f"Bearer {self.region.token}"}
        async with aiohttp.ClientSession(headers=headers) as hub, aiohttp.ClientSession() as plain:
            nhn = NhnSide(self.region, plain)
            # the hub declares its HER-ids at NHN a moment after its API answers; what it sent before would be
            # refused by NHN for good (400), so the fixtures wait for it
            declared_by = time.monotonic() + _START_S
            while not await nhn.hub_declared():
                if time.monotonic() > declared_by:
                    raise RuntimeError(f"the hub never declared its HER-ids at NHN; see {self.region.work_dir}")
                await asyncio.sleep(0.2)
            # the valid fixtures first, the broken ones once those are answered: judging a broken message can
            # keep the hub busy for seconds (a schema error report), which is not the round trip to measure
            done: dict[int, Outcome] = {}
            for valid in (True, False):
                batch = {i: f for i, f in enumerate(fixtures) if (f.expected == "acknowledged") == valid}
                sent: list[_PeerSent] = []
                for i, fixture in batch.items():
                    done[i] = await self._send(hub, nhn, fixture, sent)
                await self._follow(hub, nhn, [done[i] for i in batch], sent, time.monotonic() + timeout_s)
        return [done[i] for i in sorted(done)]

    async def _send(self, hub: aiohttp.ClientSession, nhn: NhnSide, fixture: Fixture, sent: list[_PeerSent]) -> Outcome:
        """Send one fixture from its sender - a local party through the hub, a St. Olavs party through its
        peer - adding what is to be followed at NHN to ``sent``."""
        if fixture.sender in self.peers:
            outcome = Outcome.of(fixture)
            sent += await self._peer_sends(nhn, outcome, self.peers[fixture.sender], fixture.document)
        else:
            outcome = await submit(hub, self.region.hub_url, fixture)
            if outcome.submitted.startswith("refused") and outcome.expected != "acknowledged":
                sent += await self._push(nhn, outcome, fixture)
        return outcome

    async def _peer_sends(self, nhn: NhnSide, outcome: Outcome, peer: Party, document: bytes) -> list[_PeerSent]:
        """A St. Olavs party's fixture: its peer sends it through NHN to the receivers the manifest names."""
        nhn_id, refusal = await nhn.send(peer.her_id, document, outcome.receivers)
        if nhn_id is None:
            outcome.submitted, outcome.note = "refused by NHN", refusal
            return []
        outcome.submitted, outcome.reference, outcome.ok = "accepted", nhn_id, True
        return [_PeerSent(outcome, peer.her_id, nhn_id, nhn.msg_id(document), outcome.receivers)]

    async def _push(self, nhn: NhnSide, outcome: Outcome, fixture: Fixture) -> list[_PeerSent]:
        """A broken fixture the hub refused at submit, sent to each receiver the hub serves by a peer that is
        not itself a receiver; each answers for itself, the copy receivers too."""
        peer = next((p for p in self.peers.values() if p.her_id not in fixture.receivers), None)
        sender = self.region.register.get(fixture.sender)
        if peer is None or sender is None:
            outcome.note = "not sent through NHN: no peer to send it as"
            return []
        document = as_sent_by(fixture.document, sender, peer)
        pushed = []
        for receiver in fixture.receivers:
            if receiver in self.peers:
                outcome.receivers_said[receiver] = "not tried: NHN's scripted peers judge nothing"
                continue
            nhn_id, refusal = await nhn.send(peer.her_id, document, [receiver])
            if nhn_id is not None:
                pushed.append(_PeerSent(outcome, peer.her_id, nhn_id, nhn.msg_id(document), [receiver]))
            elif self.region.register.get(receiver) is None:
                outcome.receivers_said[receiver] = "not sent on: NHN has no such receiver"
                outcome.ok = outcome.ok and outcome.expected == "E21"
            else:
                outcome.receivers_said[receiver] = f"not sent: NHN refused it ({refusal})"
                outcome.ok = False
        return pushed

    async def _follow(
        self, hub: aiohttp.ClientSession, nhn: NhnSide, outcomes: list[Outcome], sent: list[_PeerSent], deadline: float
    ) -> None:
        """Poll the hub and NHN until everything is answered or time runs out; what is open then is noted."""
        at_hub = [o for o in outcomes if o.submitted == "accepted" and o.sender not in self.peers]
        while (at_hub or sent) and time.monotonic() < deadline:
            for outcome in list(at_hub):
                if await settle(hub, self.region.hub_url, outcome):
                    at_hub.remove(outcome)
            if sent:
                view = await self._hub_view(hub)
                await nhn.poll_apprecs()
                for item in list(sent):
                    if await self._answered(item, view, nhn):
                        sent.remove(item)
            await asyncio.sleep(0.2)
        for outcome in at_hub:
            outcome.note = "no AppRec within the time limit"
        for item in sent:
            item.outcome.ok = False
            item.outcome.note = "no answer within the time limit"

    async def _hub_view(self, hub: aiohttp.ClientSession) -> _HubView:
        async with hub.get(f"{self.region.hub_url}/v1/messages", params={"direction": "in", "limit": "500"}) as r:
            messages = (await r.json())["items"]
        async with hub.get(f"{self.region.hub_url}/v1/admin/refusals", params={"limit": "500"}) as r:
            refusals = (await r.json())["items"]
        return _HubView(
            {(m["sender"], m["msg_id"], m["receiver"]): m for m in messages},
            {(r["transport_message_id"], r["claimed_receiver"]): r for r in refusals},
        )

    async def _answered(self, item: _PeerSent, view: _HubView, nhn: NhnSide) -> bool:
        """Fill in each receiver of ``item`` that has answered; True (and the outcome judged) once all have."""
        for receiver in item.receivers:
            if receiver not in item.answered and (answer := self._answer(item, receiver, view, nhn)) is not None:
                item.answered[receiver] = answer
        if len(item.answered) < len(item.receivers):
            return False
        states = await nhn.transport_states(item.nhn_id) if item.valid else {}
        outcome = item.outcome
        for receiver, (said, fits) in item.answered.items():
            apprec = nhn.apprecs.get((item.peer, item.msg_id or "", receiver))
            if item.valid and apprec is not None:  # answered as a valid message is: say how NHN saw it through
                said = f"{states.get(receiver, '?').lower()} {said}"
                fits = fits and states.get(receiver) == "Acknowledged"
                outcome.latency_s.append(apprec.seen_at - item.started)
            outcome.receivers_said[receiver] = said
            outcome.ok = outcome.ok and fits
        return True

    @staticmethod
    def _answer(item: _PeerSent, receiver: str, view: _HubView, nhn: NhnSide) -> tuple[str, bool] | None:
        """What the hub made of ``item`` for ``receiver``, once it is known: (said, fits the expectation)."""
        expected = item.outcome.expected
        refusal = view.refusals.get((item.nhn_id, receiver))
        if refusal is not None:
            fits = expected in UNREADABLE and refusal["code"] == expected
            return f"refused at transport: {refusal['condition']}", fits
        message = view.inbound.get((item.peer, item.msg_id or "", receiver))
        apprec = nhn.apprecs.get((item.peer, item.msg_id or "", receiver))
        if message is not None and message["state"] == "misaddressed":  # never answered (HITS 1168)
            return "misaddressed (no AppRec)", expected == "E21"
        if message is None or apprec is None:
            return None
        if item.valid:
            return f"(AppRec {apprec.status})", message["state"] in _INBOUND_OK and apprec.status == "1"
        code = (message["error"] or {}).get("code")
        said = f"{message['state']} {code or ''}".strip() + f" (AppRec {apprec.status} sent)"
        fits = message["state"] == "rejected" and code == expected and apprec.status == "2" and expected in apprec.codes
        return said, fits

"""Scripted EDI peers: the remote parties NHN reaches over ebXML for its API users (St. Olavs, a lab).

For each message an API user sends to a peer, NHN first sends it (``sent``), then - after the peer's
``delay`` - the peer's message handler answers with an ebXML Acknowledgment or MessageError, or nothing
at all (the transport delivery state becomes Acknowledged, Rejected with a reason, or Abandoned), and
after a further ``apprec_delay`` an acknowledged peer answers with an AppRec (Ok, or Rejected with 8221
codes) that the sender sees as AppRec info and receives as an AppRec message. A peer never answers an
AppRec with an AppRec (AppRec 1.1 §3). A peer also sends its own messages into the region
(:meth:`EdiNetwork.send`): the document a test or the config gives, which become ``NewMessage``
notifications and unread messages for the receiving API users.

Time is the simulator's :class:`~gateway.clock.Clock`: every step is queued for a time, and
:meth:`EdiNetwork.run_due` runs what is due. Tests use a ``ManualClock`` and :meth:`EdiNetwork.advance`, so
no test sleeps on the wall clock; ``gateway sim nhn`` runs :meth:`EdiNetwork.run` as a background task.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gateway.clock import Clock, ManualClock
from gateway.log import get_logger
from gateway.testing.nhn.msh_state import (
    AppRecErrorInfo,
    AppRecStatus,
    MessageRecord,
    MshError,
    MshState,
    read_document,
)

__all__ = ["DEFAULT_REASONS", "EdiNetwork", "Peer", "PeerScript"]

log = get_logger(__name__)

PeerTransport = Literal["Acknowledged", "Rejected", "Abandoned"]

#: What NHN says of a delivery that did not succeed, unless a script gives its own reason.
DEFAULT_REASONS: dict[str, str] = {
    "Rejected": "The receiver's message handler answered with an ebXML MessageError (severity Error).",
    "Abandoned": "No ebXML acknowledgment from the receiver after sending and resending; delivery abandoned.",
}


@dataclass(frozen=True)
class PeerScript:
    """How a peer answers each message sent to it (read when the message is sent, so a test may change
    a peer's script between two messages)."""

    transport: PeerTransport = "Acknowledged"
    reason: str | None = None
    apprec: AppRecStatus | None = "Ok"
    apprec_errors: tuple[AppRecErrorInfo, ...] = ()
    delay: float = 0.0
    apprec_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.transport not in ("Acknowledged", "Rejected", "Abandoned"):
            raise ValueError(f"transport must be Acknowledged, Rejected or Abandoned, not {self.transport!r}")
        if self.apprec not in (None, "Ok", "Rejected", "OkErrorInMessagePart"):
            raise ValueError(f"apprec must be Ok, Rejected, OkErrorInMessagePart or none, not {self.apprec!r}")
        if self.apprec == "Rejected" and not self.apprec_errors:
            raise ValueError("a rejecting AppRec needs at least one error (code system 8221)")
        if self.delay < 0 or self.apprec_delay < 0:
            raise ValueError("delays cannot be negative")


@dataclass
class Peer:
    """An EDI user: its HER-id, name, script, and every message (and AppRec) NHN delivered to it."""

    her_id: str
    name: str = ""
    script: PeerScript = field(default_factory=PeerScript)
    received: list[MessageRecord] = field(default_factory=list)


@dataclass(order=True)
class _Step:
    at: float
    seq: int
    label: str = field(compare=False)
    action: Callable[[], object] = field(compare=False)


class EdiNetwork:
    """The EDI side of the simulator: the peers and their queued steps. Registers itself as the state's
    :class:`~gateway.testing.nhn.msh_state.EdiSide`."""

    def __init__(self, state: MshState, clock: Clock) -> None:
        self.state = state
        self.clock = clock
        self.peers: dict[str, Peer] = {}
        self._steps: list[_Step] = []
        self._seq = itertools.count()
        state.edi = self

    # the peers ----------------------------------------------------------------------------------------

    def add_peer(self, her_id: str, name: str = "", script: PeerScript | None = None) -> Peer:
        if self.state.is_api_user(her_id):
            raise ValueError(f"HER-id {her_id} is an API user of the simulator; it cannot also be an EDI peer")
        peer = Peer(her_id, name, script or PeerScript())
        self.peers[her_id] = peer
        return peer

    def peer(self, her_id: str) -> Peer:
        try:
            return self.peers[her_id]
        except KeyError:
            raise KeyError(f"no EDI peer with HER-id {her_id}") from None

    def is_edi_user(self, her_id: str) -> bool:
        return her_id in self.peers

    # messages to a peer -------------------------------------------------------------------------------

    def accept(self, message: MessageRecord, receiver: str) -> None:
        """NHN takes a message for a peer: sent now, the peer's answers as its script says."""
        peer = self.peer(receiver)
        peer.received.append(message)
        script = peer.script
        now = self.clock.now()
        self._at(now, f"send {message.id} to {receiver}", functools.partial(self.state.set_sent, message, receiver))
        self._at(
            now + script.delay,
            f"transport receipt {message.id} from {receiver}",
            functools.partial(self._receipt, message, receiver, script),
        )

    def _receipt(self, message: MessageRecord, receiver: str, script: PeerScript) -> None:
        reason = None if script.transport == "Acknowledged" else script.reason or DEFAULT_REASONS[script.transport]
        self.state.set_transport_state(message, receiver, script.transport, reason)
        if script.transport == "Acknowledged" and script.apprec is not None and not message.is_apprec:
            self._at(
                self.clock.now() + script.apprec_delay,
                f"AppRec {message.id} from {receiver}",
                functools.partial(self.state.answer, message, receiver, script.apprec, script.apprec_errors),
            )

    # messages from a peer -----------------------------------------------------------------------------

    def send(self, peer_her: str, document: bytes, to: Sequence[str] | None = None) -> MessageRecord:
        """A peer's own message into the region, to ``to`` or else to the receivers the document names.
        Raises ``ValueError`` if the peer is unknown or a receiver is no API user of the simulator."""
        if peer_her not in self.peers:
            raise ValueError(f"no EDI peer with HER-id {peer_her}")
        receivers = list(to) if to else read_document(self.state.catalog, document).receiver_her_ids
        return self.state.receive_from_edi(peer_her, receivers, document)

    def send_later(self, peer_her: str, document: bytes, *, after: float, to: Sequence[str] | None = None) -> None:
        """Queue :meth:`send` ``after`` seconds from now (config-driven peers)."""
        self._at(self.clock.now() + after, f"{peer_her} sends", functools.partial(self.send, peer_her, document, to))

    # time ---------------------------------------------------------------------------------------------

    def _at(self, when: float, label: str, action: Callable[[], object]) -> None:
        heapq.heappush(self._steps, _Step(when, next(self._seq), label, action))

    @property
    def pending(self) -> int:
        """Steps queued and not yet run."""
        return len(self._steps)

    def run_due(self) -> int:
        """Run every step that is due (including those the steps queue for now); returns how many ran.
        A step that fails is logged and dropped: one broken script must not stop the others."""
        ran = 0
        while self._steps and self._steps[0].at <= self.clock.now():
            step = heapq.heappop(self._steps)
            ran += 1
            try:
                step.action()
            except (MshError, ValueError, KeyError) as exc:
                log.warning("sim.peer_step_failed", code="sim.peer_step_failed", step=step.label, error=str(exc))
        return ran

    def advance(self, seconds: float = 0.0) -> int:
        """Move a ``ManualClock`` on by ``seconds`` and run what is then due (tests)."""
        if seconds:
            if not isinstance(self.clock, ManualClock):
                raise TypeError("advance() moves only a ManualClock; a running simulator follows the wall clock")
            self.clock.advance(seconds)
        return self.run_due()

    async def run(self, interval: float) -> None:
        """Run due steps every ``interval`` seconds until cancelled (``gateway sim nhn``); a step that
        fails in a way :meth:`run_due` does not expect is logged, and the peers go on."""
        while True:
            try:
                self.run_due()
            except Exception:
                log.exception("sim.peer_step_failed", code="sim.peer_step_failed")
            await asyncio.sleep(interval)

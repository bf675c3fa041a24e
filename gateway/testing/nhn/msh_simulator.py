"""One simulated NHN Meldingstjener: the state both API versions share, the EDI peers, the faults, the
clock and the limits - what ``create_msh_app`` (``msh.py``) serves, and what a test drives directly."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.config import resource_dir
from gateway.model.kinds import Catalog, load_catalog
from gateway.testing.nhn.faults import Faults
from gateway.testing.nhn.msh_state import MshState
from gateway.testing.nhn.peers import EdiNetwork, Peer, PeerScript

__all__ = ["MAX_REQUEST_BYTES", "SIMULATOR", "Simulator"]

#: NHN's documented request limit ("The request has a max limit of 35 MB").
MAX_REQUEST_BYTES = 35 * 1024 * 1024


class Simulator:
    """One simulated NHN: the state both API versions share, the EDI peers, the faults and the clock."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        catalog: Catalog | None = None,
        api_users: Iterable[str] = (),
        first_offset: int = 1000,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        heartbeat: float = 15.0,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.faults = Faults()
        catalog = catalog or load_catalog(resource_dir("schemas") / "catalog.toml")
        self.state = MshState(self.clock, catalog, api_users=api_users, first_offset=first_offset)
        self.state.log.duplicate = self.faults.take_duplicate
        self.network = EdiNetwork(self.state, self.clock)
        self.max_request_bytes = max_request_bytes
        #: seconds between SSE comment lines while a stream has nothing to say
        self.heartbeat = heartbeat

    def add_peer(self, her_id: str, name: str = "", script: PeerScript | None = None) -> Peer:
        return self.network.add_peer(her_id, name, script)

    def advance(self, seconds: float = 0.0) -> int:
        """Move the (manual) clock on and run the peers' steps that are then due."""
        return self.network.advance(seconds)

    def close(self) -> None:
        """End every open notification stream (the server is stopping)."""
        self.state.log.close()


SIMULATOR = web.AppKey("nhn_msh_simulator", Simulator)

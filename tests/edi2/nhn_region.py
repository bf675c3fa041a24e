"""The SiO hub talking to a local NHN: the fake HelseID, the Meldingstjener simulator with St. Olavs'
departments and lab as scripted EDI peers, and the hub whose St. Olavs parties are reached by ``edi2`` -
each on loopback, the hub's worker driven by the test. Not a test module."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from joserfc.jwk import RSAKey

from gateway.clock import ManualClock
from gateway.service import Gateway
from gateway.testing.nhn.dpop_check import DpopAuthorizer
from gateway.testing.nhn.helseid import HELSEID, HelseIdConfig, RegisteredClient, helseid_app
from gateway.testing.nhn.msh import Simulator, create_msh_app
from gateway.testing.nhn.peers import PeerScript

from ..region import settings_for
from .processes import nhn_register

STOLAV_PARTIES = ("7200101", "7200102", "7200201")
CLIENT_ID = "sio-gateway"


@dataclass
class NhnRegion:
    hub: Gateway
    sim: Simulator
    helseid: Any  # the FakeHelseId, for its knobs
    msh_url: str
    helseid_url: str

    async def until(self, done: Callable[[], Awaitable[bool]], *, what: str, within_s: float = 120.0) -> None:
        """Drive the hub's worker and the peers' clock until ``done`` - a generous bound for a stuck run,
        never a timing to meet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while loop.time() < deadline:
            await self.hub.worker.drain()
            self.sim.advance(1.0)
            if await done():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"never happened: {what}")


@contextlib.asynccontextmanager
async def nhn_region(
    tmp_path: Path,
    *,
    api_version: str = "3",
    receive: str = "poll",
    default_route: bool = True,
    her_ids: frozenset[str] | None = None,
    adapter_options: dict[str, Any] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[NhnRegion]:
    """The region; ``adapter_options`` adds to (or overrides) the edi2 adapter's options, ``sections`` the
    hub's settings (``{"retry": {...}}``)."""
    key = RSAKey.generate_key(2048)
    key_file = tmp_path / "helseid" / "client.jwk"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(json.dumps(key.as_dict(private=True)), encoding="utf-8")
    register = nhn_register()
    local = [p.her_id for p in register.local_parties]
    client = RegisteredClient(CLIENT_ID, key.as_dict(private=False), her_ids=her_ids or frozenset(local))
    peers_clock = ManualClock()
    sim = Simulator(clock=peers_clock, api_users=local)
    for her_id in STOLAV_PARTIES:
        sim.add_peer(her_id, register.get(her_id).name if register.get(her_id) else "", PeerScript())  # type: ignore[union-attr]
    helseid = helseid_app(HelseIdConfig(clients=(client,)))
    async with TestServer(helseid, host="127.0.0.1") as helseid_server:
        helseid_url = str(helseid_server.make_url("")).rstrip("/")
        authorizer = DpopAuthorizer(helseid[HELSEID].public_key, issuer=helseid_url)
        async with TestServer(create_msh_app(sim, authorizer), host="127.0.0.1") as msh_server:
            msh_url = str(msh_server.make_url("")).rstrip("/")
            options = {
                "base_url": msh_url,
                "api_version": api_version,
                "helseid_url": helseid_url,
                "client_id": CLIENT_ID,
                "key_file": str(key_file),
                "receive": receive,
                "poll_interval_s": 0.05,
                **(adapter_options or {}),
            }
            settings = settings_for(
                tmp_path / "hub",
                security={"protection": "none"},
                routing={"default_adapter": "edi2" if default_route else None},
                **(sections or {}),
            )
            settings = dataclasses.replace(settings, adapters={"edi2": options})
            async with Gateway(settings, register=register, clock=ManualClock()) as hub:
                yield NhnRegion(hub, sim, helseid[HELSEID], msh_url, helseid_url)

"""The SiO region as it runs now: this hub, whose St. Olavs parties are EDI parties reached through NHN's
Meldingstjener (the ``edi2`` adapter), beside a local NHN - ``gateway sim nhn`` with the fake HelseID - whose
scripted EDI peers play St. Olavs - and, when RabbitMQ is installed, a local Tjenestebuss (``gateway sim
helsenorge``, its broker on a free port) whose Helsenorge.Messaging-like peer plays the region's Helsenorge
party, reached by the hub over ``amqp``; without RabbitMQ that party is one more EDI peer of NHN's. Two or
three processes on free loopback ports, as ``./dev run`` starts them.

Layout under the work dir::

    sio-hub/  gateway.toml  region.toml  gateway.log  gateway.sqlite  pki/  helseid/client.key
              helsenorge.log  rabbitmq/   (the local bus, when RabbitMQ is installed)
    nhn/      sim.toml  nhn.log  replay-client.key

The hub's data dir gets the dev PKI first (what ``gateway pki init`` makes, the HelseID client key with
it), because the simulator reads that key's public half at start to know the hub's HelseID client. The
simulator's config names the local parties as API users, registers the hub's client and the replay's own
read-only client (``sio-replay``, for what the replay checks at NHN), and makes each remote party of the
register a peer that acknowledges at once and answers with an OK AppRec - no scripted delay, so that the
round trip measured is the gateway's and NHN's, not the script's.

The hub has no default route: without NHN's Adresseregister (which ``gateway sim nhn`` does not serve) a
HER-id outside the register could not be refused at submit, and the E21 fixture is about that refusal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import Settings, load_settings
from gateway.registry import Party, Register, dump_register
from gateway.security.devpki import DEV_HELSEID_KEY, init_dev_pki, write_private_key
from gateway.testing import replay_processes as processes
from gateway.testing.rabbit import find_server

__all__ = ["HUB_CLIENT", "OBSERVER_CLIENT", "NhnRegion", "launch_nhn_region", "stop_nhn_region", "wait_until_up"]

HUB_CLIENT = "sio-gateway"
OBSERVER_CLIENT = "sio-replay"


@dataclass
class NhnRegion:
    """The hub and the local NHN, as started processes, and where each answers."""

    work_dir: Path
    hub_url: str
    msh_url: str
    helseid_url: str
    token: str
    register: Register  # the hub's
    observer_key: Path
    hub: subprocess.Popen[bytes] | None = None
    nhn: subprocess.Popen[bytes] | None = None
    #: ``gateway sim helsenorge``: the local Tjenestebuss with Helsenorge's peer, when RabbitMQ is installed
    bus: subprocess.Popen[bytes] | None = None

    @property
    def peers(self) -> list[Party]:
        """The parties NHN's scripted EDI peers play: every remote party of the register reached through NHN."""
        return [p for p in self.register.remote_parties if p.adapter == "edi2"]

    @property
    def local_her_ids(self) -> list[str]:
        return [p.her_id for p in self.register.local_parties]

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in (self.bus, self.nhn, self.hub) if p is not None]


def launch_nhn_region(settings: Settings, register: Register, work_dir: Path, *, protection: str = "cms") -> NhnRegion:
    """Write the hub's config and region, make its dev PKI, write the simulator's config, and start both."""
    work_dir = work_dir.resolve()
    hub_dir, nhn_dir = work_dir / "sio-hub", work_dir / "nhn"
    hub_dir.mkdir(parents=True, exist_ok=True)
    nhn_dir.mkdir(exist_ok=True)
    hub_port, msh_port, helseid_port = processes.free_port(), processes.free_port(), processes.free_port()
    pki = hub_dir / "pki"
    bus = find_server() is not None  # Helsenorge's parties over a local Tjenestebuss; else through NHN as well
    hub_register = register.replaced(
        [
            dataclasses.replace(p, adapter="edi2", endpoint=None)
            for p in register.remote_parties
            if not (bus and p.adapter == "amqp")
        ]
    )
    region = NhnRegion(
        work_dir,
        f"http://127.0.0.1:{hub_port}",
        f"http://127.0.0.1:{msh_port}",
        f"http://127.0.0.1:{helseid_port}",
        secrets.token_urlsafe(24),
        hub_register,
        nhn_dir / "replay-client.key",
    )
    edi2 = {
        "base_url": region.msh_url,
        "api_version": "3",
        "helseid_url": region.helseid_url,
        "client_id": HUB_CLIENT,
        "key_file": DEV_HELSEID_KEY,
        "receive": "stream",
        "poll_interval_s": 0.5,  # the pause before the stream is opened again
    }
    (hub_dir / "region.toml").write_text(dump_register(hub_register), encoding="utf-8")
    adapters: dict[str, dict[str, Any]] = {"adapters.edi2": edi2}
    if bus:
        amqp_url = f"amqp://guest:guest@127.0.0.1:{processes.free_port()}"
        adapters["adapters.amqp"] = {"url": amqp_url, "namespace": "NHNTestServiceBus", "release_after_s": 1.0}
    config = processes.gateway_config("sio-hub", hub_port, region.token, settings, pki, protection, adapters)
    (hub_dir / "gateway.toml").write_text(config, encoding="utf-8")
    init_dev_pki(load_settings(hub_dir / "gateway.toml"), hub_register)  # = gateway pki init --config <it>
    write_private_key(region.observer_key, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    (nhn_dir / "sim.toml").write_text(_sim_config(region, msh_port, helseid_port, hub_dir), encoding="utf-8")
    if bus:  # first: RabbitMQ takes the longest to come up
        region.bus = processes.start(["sim", "helsenorge", "--config", str(hub_dir / "gateway.toml")], _bus_log(region))
    region.nhn = processes.start(["sim", "nhn", "--config", str(nhn_dir / "sim.toml")], nhn_dir / "nhn.log")
    region.hub = processes.start(["serve", "--config", str(hub_dir / "gateway.toml")], hub_dir / "gateway.log")
    return region


def _sim_config(region: NhnRegion, msh_port: int, helseid_port: int, hub_dir: Path) -> str:
    """The simulator's ``sim.toml`` (the format of docs/edi2.md): the same parties the hub's register has."""
    local = region.local_her_ids
    sections: list[tuple[str, dict[str, Any]]] = [
        ("server", {"host": "127.0.0.1", "port": msh_port}),
        ("msh", {"api_users": local, "tick_seconds": 0.1}),
        ("helseid", {"port": helseid_port}),
        ("[helseid.client]", {"client_id": HUB_CLIENT, "key_file": str(hub_dir / DEV_HELSEID_KEY), "her_ids": local}),
        (
            "[helseid.client]",
            {
                "client_id": OBSERVER_CLIENT,
                "key_file": region.observer_key.name,
                "her_ids": local + [p.her_id for p in region.peers],
            },
        ),
    ]
    for peer in region.peers:
        script = {"transport": "Acknowledged", "apprec": "Ok", "delay_seconds": 0, "apprec_delay_seconds": 0}
        sections.append(("[peer]", {"her_id": peer.her_id, "name": peer.name, **script}))
    lines = ["# Written by gateway replay: the local NHN of the simulated SiO region (docs/edi2.md)."]
    for header, values in sections:
        lines += ["", f"[{header}]", *(f"{key} = {processes.toml_value(value)}" for key, value in values.items())]
    return "\n".join(lines) + "\n"


async def wait_until_up(region: NhnRegion, timeout_s: float = 180) -> None:
    """The fake HelseID (started after the MSH API, in the same process) and the hub's API answer, and the
    local bus has Helsenorge's peer on it (a bound for a stuck start, not a timing to meet)."""
    urls = [f"{region.helseid_url}/.well-known/openid-configuration", f"{region.hub_url}/healthz"]
    await processes.wait_answering(urls, region.processes, region.work_dir)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while region.bus is not None and _BUS_UP not in _bus_log(region).read_bytes():
        if region.bus.poll() is not None or asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"the local Tjenestebuss did not come up; see {_bus_log(region)}")
        await asyncio.sleep(0.2)


def stop_nhn_region(region: NhnRegion, timeout_s: float = 30) -> list[int]:
    """Stop the hub first (it may still be answering NHN or the bus), then NHN and the bus; their exit codes."""
    return processes.stop([p for p in (region.hub,) if p], timeout_s) + processes.stop(
        [p for p in (region.nhn, region.bus) if p], timeout_s
    )


_BUS_UP = b"on the bus"  # what `gateway sim helsenorge` says once its peers are connected


def _bus_log(region: NhnRegion) -> Path:
    return region.work_dir / "sio-hub" / "helsenorge.log"

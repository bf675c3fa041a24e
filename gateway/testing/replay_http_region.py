"""The SiO region as two gateway processes joined by the ``http`` adapter: this hub and a simulated St. Olavs
gateway, each the other's remote party, CMS on, with a shared dev PKI.

This is the gateway-to-gateway transport, kept for peers that run this gateway: ``gateway replay --via
http`` runs the fixtures through it, and the crash proof (tests/test_crash.py) and the benchmarks start it
to kill, fill and drain real processes. (``gateway.replay`` re-exports these names, where those import
them.)
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.http import RECEIVING_PATH
from gateway.config import Settings
from gateway.registry import Certificates, Party, Register, dump_register
from gateway.security.devpki import init_dev_pki
from gateway.testing import replay_processes as processes

__all__ = ["Region", "launch_region", "mirror_regions", "stop_region", "wait_until_up", "with_certs"]


@dataclass
class Region:
    """The two gateways of the simulated region, as started processes."""

    work_dir: Path
    hub_url: str
    stolav_url: str
    token: str
    hub_register: Register
    stolav_register: Register
    settings: Settings
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start (or restart) the gateway process ``name`` ("sio-hub" or "st-olavs") from its config."""
        folder = self.work_dir / name
        return processes.start(["serve", "--config", str(folder / "gateway.toml")], folder / "gateway.log")

    def url_for(self, her_id: str) -> str:
        """The gateway serving ``her_id``; a party nobody serves is taken to the hub."""
        party = self.hub_register.get(her_id)
        return self.stolav_url if party is not None and not party.local else self.hub_url


def with_certs(party: Party, pki: Path | None, *, local: bool) -> Party:
    """``party`` with its dev PKI certificates under ``pki`` (and its keys, where it is ``local``)."""
    if pki is None:
        return party
    base = pki / party.her_id
    certs = Certificates(
        sign_cert=base / "sign.crt",
        enc_cert=base / "enc.crt",
        sign_key=base / "sign.key" if local else None,
        enc_key=base / "enc.key" if local else None,
    )
    return dataclasses.replace(party, certificates=certs)


def mirror_regions(
    register: Register, *, hub_endpoint: str, stolav_endpoint: str, adapter: str = "http", pki: Path | None = None
) -> tuple[Register, Register]:
    """The hub's register and the simulated St. Olavs gateway's: the same parties, local and remote
    swapped, each side's remote parties reached at the other's endpoint through ``adapter``."""
    hub, stolav = [], []
    for p in register:
        as_hub = dataclasses.replace(
            p, adapter=None if p.local else adapter, endpoint=None if p.local else stolav_endpoint
        )
        as_stolav = dataclasses.replace(
            p, local=not p.local, adapter=adapter if p.local else None, endpoint=hub_endpoint if p.local else None
        )
        hub.append(with_certs(as_hub, pki, local=p.local))
        stolav.append(with_certs(as_stolav, pki, local=not p.local))
    return Register(hub, name=register.name), Register(stolav, name=f"{register.name} (St. Olavs view)")


def launch_region(
    settings: Settings,
    register: Register,
    work_dir: Path,
    *,
    protection: str = "cms",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Region:
    """Write both gateways' configs and the shared dev PKI, and start both processes. ``overrides`` are
    config settings by section for both gateways (tests shorten leases and retry intervals with them)."""
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    pki = work_dir / "pki"
    init_dev_pki(
        dataclasses.replace(settings, gateway=dataclasses.replace(settings.gateway, data_dir=work_dir)), register
    )
    hub_port, stolav_port = processes.free_port(), processes.free_port()
    hub_register, stolav_register = mirror_regions(
        register,
        hub_endpoint=f"http://127.0.0.1:{hub_port}{RECEIVING_PATH}",
        stolav_endpoint=f"http://127.0.0.1:{stolav_port}{RECEIVING_PATH}",
        pki=pki,
    )
    token = secrets.token_urlsafe(24)
    region = Region(
        work_dir,
        f"http://127.0.0.1:{hub_port}",
        f"http://127.0.0.1:{stolav_port}",
        token,
        hub_register,
        stolav_register,
        settings,
    )
    for name, port, reg in (("sio-hub", hub_port, hub_register), ("st-olavs", stolav_port, stolav_register)):
        folder = work_dir / name
        folder.mkdir(exist_ok=True)
        (folder / "region.toml").write_text(dump_register(reg), encoding="utf-8")
        config = processes.gateway_config(name, port, token, settings, pki, protection, overrides or {})
        (folder / "gateway.toml").write_text(config, encoding="utf-8")
        region.processes.append(region.start(name))
    return region


async def wait_until_up(region: Region) -> None:
    """Both gateways answer ``/healthz``."""
    urls = [f"{url}/healthz" for url in (region.hub_url, region.stolav_url)]
    await processes.wait_answering(urls, region.processes, region.work_dir)


def stop_region(region: Region, timeout_s: float = 30) -> list[int]:
    """SIGTERM both gateways and wait; their exit codes."""
    return processes.stop(region.processes, timeout_s)

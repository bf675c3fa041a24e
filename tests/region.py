"""An in-process SiO region for tests: the hub and a simulated St. Olavs gateway joined by the memory
adapter, each with its own SQLite store under a tmp dir. The worker is driven by hand (``drain``)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tomllib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.memory import MemoryNetwork
from gateway.clock import ManualClock
from gateway.config import PROJECT_ROOT, Settings, load_settings
from gateway.pipeline.outbound import Client
from gateway.registry import Register, dump_register, load_register
from gateway.replay import mirror_regions
from gateway.security.devpki import init_dev_pki
from gateway.service import Gateway

from .conftest import BUNDLE, FIXTURES

ADMIN = Client("test", None, True)
_MSGID = re.compile(rb"<MsgId>[^<]+</MsgId>")


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def with_msg_id(body: bytes, msg_id: str | None = None) -> bytes:
    """The message under another MsgId (a new one unless given): the same content sent again as new."""
    return _MSGID.sub(f"<MsgId>{msg_id or uuid.uuid4()}</MsgId>".encode(), body, count=1)


def manifest_entry(name: str) -> dict[str, Any]:
    entries = tomllib.loads((FIXTURES / "manifest.toml").read_text(encoding="utf-8"))["fixture"]
    return next(e for e in entries if e["file"] == name)


def http_register() -> Register:
    """The SiO register as tests have it: every remote party (St. Olavs, Helsenorge) reached over ``http``
    (a peer gateway at 127.0.0.1:8091) - the embedded default reaches St. Olavs through a local NHN, which
    tests/edi2 starts, and Helsenorge over the bus, which tests/amqp starts."""
    base = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
    endpoint = "http://127.0.0.1:8091/transport/http"
    return base.replaced([dataclasses.replace(p, adapter="http", endpoint=endpoint) for p in base.remote_parties])


def settings_for(data_dir: Path, **sections: Any) -> Settings:
    """The embedded default config for a test gateway in ``data_dir``: the register from
    :func:`http_register`, no default route, no edi2 adapter, short poll intervals."""
    base = load_settings(PROJECT_ROOT / "config" / "gateway.toml")
    data_dir.mkdir(parents=True, exist_ok=True)
    region = data_dir / "sio-region.toml"
    region.write_text(dump_register(http_register()), encoding="utf-8")
    settings = dataclasses.replace(
        base,
        gateway=dataclasses.replace(base.gateway, data_dir=data_dir, region=region),
        schemas=dataclasses.replace(base.schemas, bundle=BUNDLE if BUNDLE.is_dir() else None),
        delivery=dataclasses.replace(base.delivery, poll_interval_s=0.05, shutdown_grace_s=2.0),
        # the embedded default reaches St. Olavs through a local NHN; tests that want it say so (tests/edi2)
        routing=dataclasses.replace(base.routing, default_adapter=None),
        adapters={},
    )
    for name, changes in sections.items():
        settings = dataclasses.replace(settings, **{name: dataclasses.replace(getattr(settings, name), **changes)})
    return settings


@dataclass
class TestRegion:
    hub: Gateway
    stolav: Gateway
    network: MemoryNetwork
    clock: ManualClock

    async def drain(self) -> None:
        """Deliver everything that is due, on both sides, until nothing moves."""
        for _ in range(20):
            before = len(self.network.carried)
            await self.hub.worker.drain()
            await self.stolav.worker.drain()
            if len(self.network.carried) == before:
                await self.hub.worker.drain()
                return


def shared_pki(tmp_path: Path, register: Register) -> Path:
    """One dev PKI both gateways of a test region use (tmp_path/pki)."""
    init_dev_pki(settings_for(tmp_path), register)
    return tmp_path / "pki"


@contextlib.asynccontextmanager
async def region(
    tmp_path: Path,
    *,
    protection: str = "none",
    hub_register: Register | None = None,
    hub_store: str | None = None,
    **sections: Any,
) -> AsyncIterator[TestRegion]:
    base = hub_register or load_register(PROJECT_ROOT / "config" / "sio-region.toml")
    pki = shared_pki(tmp_path, base) if protection == "cms" else None
    hub_reg, st_reg = mirror_regions(
        base, hub_endpoint="memory://hub", stolav_endpoint="memory://stolav", adapter="memory", pki=pki
    )
    network = MemoryNetwork()
    clock = ManualClock()
    security: dict[str, Any] = {"protection": protection}
    if pki is not None:
        security |= {"trust_anchors": (pki / "ca.crt",), "crls": (str(pki / "ca.crl"),)}
    hub_sections = {**sections, "store": {"url": hub_store}} if hub_store else sections
    hub = Gateway(
        settings_for(tmp_path / "hub", security=security, **hub_sections),
        register=hub_reg,
        clock=clock,
        adapter_options={"memory": {"network": network, "address": "memory://hub"}},
    )
    stolav = Gateway(
        settings_for(tmp_path / "stolav", security=security, **sections),
        register=st_reg,
        clock=clock,
        adapter_options={"memory": {"network": network, "address": "memory://stolav"}},
    )
    async with hub, stolav:
        yield TestRegion(hub, stolav, network, clock)

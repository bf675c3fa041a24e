"""The hub and a simulated St. Olavs gateway joined through a real RabbitMQ set up like NHN's Tjenestebuss,
CMS on (one dev PKI), each with its own SQLite store. Workers are driven by ``until``; receiving runs on
the adapters' own links."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.clock import SystemClock
from gateway.config import PROJECT_ROOT
from gateway.registry import Certificates, Register, load_register
from gateway.replay import mirror_regions
from gateway.service import Gateway
from gateway.store.base import DeliveryRecord, DeliveryState
from gateway.testing.rabbit import QUEUE_SUFFIXES, Broker

from ..region import settings_for, shared_pki


@dataclass
class AmqpRegion:
    hub: Gateway
    stolav: Gateway
    broker: Broker
    namespace: str
    vhost: str
    pki: Path
    register: Register

    async def until(self, done: Callable[[], Awaitable[bool]], *, what: str, within_s: float = 120.0) -> None:
        """Drive both workers until ``done`` - a generous bound for a stuck run, never a timing to meet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while loop.time() < deadline:
            await self.hub.worker.drain()
            await self.stolav.worker.drain()
            if await done():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"never happened: {what}")


async def all_acknowledged(gateway: Gateway, message_ids: list[str]) -> bool:
    """Every delivery of each of ``message_ids`` settled by a positive AppRec."""
    for message_id in message_ids:
        view = await gateway.store.get(message_id)
        if view is None or any(d.state != DeliveryState.ACKNOWLEDGED for d in view.deliveries):
            return False
    return True


async def delivery_to(gateway: Gateway, message_id: str, receiver: str) -> DeliveryRecord | None:
    """The delivery of ``message_id`` to ``receiver`` (None until there is one)."""
    view = await gateway.store.get(message_id)
    return next((d for d in view.deliveries if d.receiver_her == receiver), None) if view else None


def reached(gateway: Gateway, message_id: str, receiver: str, state: DeliveryState) -> Callable[[], Awaitable[bool]]:
    """For ``until``: whether the delivery of ``message_id`` to ``receiver`` is in ``state``."""

    async def done() -> bool:
        delivery = await delivery_to(gateway, message_id, receiver)
        return delivery is not None and delivery.state == state

    return done


def bus_options(broker: Broker, namespace: str, vhost: str, **more: Any) -> dict[str, Any]:
    return {
        "url": broker.amqp_url,
        "virtual_host": f"vhost:{vhost}",
        "namespace": namespace,
        "release_after_s": 0.2,
        **more,
    }


def new_bus(broker: Broker, her_ids: list[str], suffixes: tuple[str, ...] = QUEUE_SUFFIXES) -> tuple[str, str]:
    """A namespace of NHN's shape, in a vhost of its own (queues belong to the vhost: tests must not share them)."""
    vhost = f"test-{uuid.uuid4().hex[:12]}"
    broker.set_up_namespace("NHNTestServiceBus", her_ids, vhost=vhost, suffixes=suffixes)
    return "NHNTestServiceBus", vhost


@contextlib.asynccontextmanager
async def amqp_region(
    tmp_path: Path,
    broker: Broker,
    *,
    hub_her_ids: list[str] | None = None,
    stolav_her_ids: list[str] | None = None,
    retry: dict[str, Any] | None = None,
    stolav_sync_url: str | None = None,
    unverified_answer_s: float = 0.0,
    suffixes: tuple[str, ...] = QUEUE_SUFFIXES,
    unpinned: tuple[str, ...] = (),
    **amqp: Any,
) -> AsyncIterator[AmqpRegion]:
    """Both gateways on a namespace in a vhost of their own on ``broker``, so tests do not see each other's queues.
    ``hub_her_ids``/``stolav_her_ids`` name the queues each side reads (all its local parties' unless given;
    ``[]`` reads none - the test plays that side on the bus itself). Retries come quickly (``retry``: the
    settings' [retry] for both). ``stolav_sync_url``: where St. Olavs' first party's EHR answers synchronous
    requests. ``unverified_answer_s``: how long a packet that does not verify waits for its answer (0 here
    unless a test is about it). ``suffixes``: each party's queues (NHN's four unless a test needs more).
    ``unpinned``: St. Olavs' HER-ids whose certificates the hub's register does not pin (a CPP/CPA gives them)."""
    base = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
    namespace, vhost = new_bus(broker, [p.her_id for p in base], suffixes)
    pki = shared_pki(tmp_path, base)
    hub_reg, st_reg = mirror_regions(base, hub_endpoint="", stolav_endpoint="", adapter="amqp", pki=pki)
    if unpinned:
        hub_reg = Register(
            [replace(p, certificates=Certificates()) if p.her_id in unpinned else p for p in hub_reg], name=hub_reg.name
        )
    if stolav_sync_url:
        answering = next(p for p in st_reg if p.local)
        st_reg = Register(
            [replace(p, sync_url=stolav_sync_url) if p is answering else p for p in st_reg], name=st_reg.name
        )
    security: dict[str, Any] = {
        "protection": "cms",
        "trust_anchors": (pki / "ca.crt",),
        "crls": (str(pki / "ca.crl"),),
        "unverified_answer_s": unverified_answer_s,
        "dev_pki": False,  # the shared one above, pinned; none of its own under each data dir
    }
    options = bus_options(broker, namespace, vhost, **amqp)
    quick = {"base_s": 0.2, "cap_s": 2.0, "breaker_threshold": 1000, **(retry or {})}
    hub_options = options if hub_her_ids is None else {**options, "her_ids": hub_her_ids}
    stolav_options = options if stolav_her_ids is None else {**options, "her_ids": stolav_her_ids}
    hub = Gateway(
        settings_for(tmp_path / "hub", security=security, retry=quick),
        register=hub_reg,
        clock=SystemClock(),
        adapter_options={"amqp": hub_options},
    )
    stolav = Gateway(
        settings_for(tmp_path / "stolav", security=security, retry=quick),
        register=st_reg,
        clock=SystemClock(),
        adapter_options={"amqp": stolav_options},
    )
    async with hub, stolav:
        yield AmqpRegion(hub, stolav, broker, namespace, vhost, pki, base)

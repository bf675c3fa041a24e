"""The running gateway: the message core, the store, protection, the pipelines, transports and the worker,
wired together once and closed in reverse order. ``serve``, ``replay`` and the integration tests all
build one of these; the aiohttp app (api/app.py) holds it for its handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import Mapping
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from adapters.base import adapter_class
from adapters.folder import FolderWatcher
from gateway.clock import Clock, SystemClock
from gateway.config import Settings
from gateway.core import Core, build_core
from gateway.delivery import DeliveryWorker
from gateway.ehr import EhrCallback, EhrFolder
from gateway.errors import ConfigError, GatewayError
from gateway.local import LocalTransport
from gateway.log import get_logger
from gateway.pipeline.inbound import InboundPipeline
from gateway.pipeline.outbound import Client, OutboundPipeline
from gateway.pipeline.receipts import Receipts
from gateway.pipeline.sync import SYNC_TIMEOUT_S, SyncPipeline, SyncReply
from gateway.registry import Register
from gateway.scheduler import Housekeeping, guarded, start_scheduler
from gateway.security.devpki import ensure_dev_pki
from gateway.security.protection import MessageProtection, NoProtection, build_protection
from gateway.store.base import MessageRecord, Store
from gateway.store.factory import open_store
from gateway.transport import InboundResult, Packet, Transport, TransportContext

__all__ = ["Gateway"]

log = get_logger(__name__)


class StoreState:
    """An adapter's durable state (:class:`~gateway.transport.TransportState`) in the store's meta table,
    under a prefix of its own - shared by every gateway process on the store."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    async def get(self, key: str) -> str | None:
        return await self.store.get_meta(self.prefix + key)

    async def set(self, key: str, value: str | None) -> None:
        await self.store.set_meta(self.prefix + key, value)

    async def forget(self, first: str, last: str) -> None:
        await self.store.forget_meta(self.prefix + first, self.prefix + last)


class Gateway:
    """One gateway process's worth of parts. Use as ``async with Gateway(settings) as gw: ...``."""

    def __init__(
        self,
        settings: Settings,
        *,
        register: Register | None = None,
        clock: Clock | None = None,
        protection: MessageProtection | None = None,
        adapter_options: Mapping[str, Mapping[str, Any]] | None = None,
        worker_owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._register = register
        self._protection = protection
        self._adapter_options = adapter_options
        self._worker_owner = worker_owner
        self._rng = rng
        self._tasks: list[asyncio.Task[None]] = []
        self._watchers: list[FolderWatcher] = []
        self._scheduler: AsyncIOScheduler | None = None
        self.transports: dict[str, Transport] = {}

    async def __aenter__(self) -> Gateway:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        settings = self.settings
        self.core: Core = build_core(settings, register=self._register)
        self.register = self.core.register
        unchecked = self.core.unchecked_kinds()
        if settings.schemas.bundle is None or unchecked:
            log.warning(
                "schemas.unchecked_kinds",
                code="schemas.unchecked_kinds",
                bundle=str(settings.schemas.bundle),
                kinds=unchecked,
            )
        self.store = open_store(settings)
        await self.store.open()
        self.protection = self._protection or self._build_protection()
        self.receipts = Receipts(self.core, self.store, self.clock)
        self.inbound = InboundPipeline(self.core, self.store, self.protection, self.receipts, self.clock)
        self.outbound = OutboundPipeline(self.core, self.store, self.clock)
        self.sync = SyncPipeline(self.core, self.protection, self.outbound, self.transports, self.clock)
        self.housekeeping = Housekeeping(self.store, self.protection, settings, self.clock)
        # CRLs given as URLs are fetched before the first message needs them, not an hour later
        await guarded("crls", self.housekeeping.crls)()
        self.worker = DeliveryWorker(
            store=self.store,
            register=self.register,
            settings=settings,
            protection=self.protection,
            transports=self.transports,
            router=self.core.router,
            clock=self.clock,
            owner=self._worker_owner,
            rng=self._rng,
        )
        await self.store.watch(self.worker.notify)  # work another process stores wakes this one's worker
        await self._start_transports()  # last: a packet may arrive the moment an adapter listens

    def _build_protection(self) -> MessageProtection:
        if self.settings.security.protection == "none":
            return NoProtection()
        if self.settings.security.dev_pki:  # never in production: it would mint certificates for peers
            ensure_dev_pki(self.settings, self.register)
        return build_protection(self.settings, self.register)

    async def _start_transports(self) -> None:
        """Every channel a delivery can take: the adapters the register and the settings name, the default
        route's, and the gateway's own hand-overs (local parties, the EHRs' folders and callbacks)."""
        settings = self.settings
        names = {p.adapter for p in self.register.remote_parties if p.adapter} | set(settings.adapters)
        if settings.routing.default_adapter:
            names.add(settings.routing.default_adapter)
        options = {**settings.adapters, **(self._adapter_options or {})}
        local_her_ids = tuple(p.her_id for p in self.register.local_parties)
        own = {
            "local": LocalTransport(self._receive_local, self._context({})),
            "ehr:folder": EhrFolder(self._context({})),
            "ehr:callback": EhrCallback(self._context({})),
        }
        for name, transport in own.items():
            self.transports[name] = transport
        for name in sorted(names):
            context = self._context(
                # the message cap, for adapters that must refuse a body before reading it (folder)
                {"max_bytes": settings.schemas.max_message_bytes, **options.get(name, {})},
                local_her_ids=local_her_ids,
                state=StoreState(self.store, f"adapter:{name}:"),
                reports=self.receipts,
                answer=functools.partial(self.sync.answer, via=name),
                certificates=self.protection,
            )
            transport = adapter_class(name)(context)
            await transport.start(self._handler_for(name, plain=transport.carries == "plain"))
            self.transports[name] = transport
            if name == settings.routing.default_adapter and transport.directory is not None:
                self.core.router.directory = transport.directory  # E21 at submit from the national register

    def _context(self, options: Mapping[str, Any], **more: Any) -> TransportContext:
        return TransportContext(
            options=options,
            data_dir=str(self.settings.data_dir),
            send_timeout_s=self.settings.delivery.send_timeout_s,
            **more,
        )

    def _handler_for(self, adapter: str, *, plain: bool) -> Any:
        async def handle(packet: Packet) -> InboundResult:
            return await self.receive(packet, via=adapter, plain=plain)

        return handle

    async def _receive_local(self, packet: Packet) -> InboundResult:
        return await self.receive(packet, via="local", plain=True)

    # -- what the API, the adapters and the harness call ----------------------------------------------

    async def submit(self, data: bytes, client: Client) -> tuple[MessageRecord, bool]:
        record, created = await self.outbound.submit(data, client)
        self.worker.notify()
        return record, created

    async def request(self, data: bytes, client: Client, *, timeout_s: float = SYNC_TIMEOUT_S) -> SyncReply:
        """A synchronous request from an EHR, and the receiver's reply (nothing is queued or stored)."""
        return await self.sync.request(data, client, timeout_s=timeout_s)

    async def receive(self, packet: Packet, *, via: str, plain: bool = False) -> InboundResult:
        """A packet from a channel: ``plain`` when the channel carries the XML itself (nothing to decrypt
        or verify here: the hub's own hand-over, or NHN's Meldingstjener, which verified it)."""
        result = await self.inbound.receive(packet, via=via, plain=plain)
        if result.accepted:
            self.worker.notify()  # an EHR hand-over or an AppRec may be waiting
        return result

    # -- background ---------------------------------------------------------------------------------

    def start_background(self) -> None:
        """Run the delivery worker and the drop-folder watchers until :meth:`close`."""
        self._tasks.append(asyncio.create_task(self.worker.run(), name="delivery-worker"))
        self._scheduler = start_scheduler(self.housekeeping, self.settings)
        for folder in self.settings.drop_folders:
            if not folder.senders:  # fail closed: a folder names whom it may send for, like a token
                raise ConfigError(f"Drop folder {folder.path} lists no senders; say which local HER-ids it serves.")
            everyone = "*" in folder.senders
            client = Client(
                name=folder.name or f"folder:{folder.path.name}",
                senders=None if everyone else frozenset(folder.senders),
            )
            watcher = FolderWatcher(
                folder.path,
                self._drop_handler(client),
                poll_interval_s=folder.poll_interval_s,
                settle_s=folder.settle_s,
                max_bytes=self.settings.schemas.max_message_bytes,
                clock=self.clock,
            )
            self._watchers.append(watcher)
            self._tasks.append(asyncio.create_task(watcher.start(), name=f"drop-folder:{folder.path}"))

    def _drop_handler(self, client: Client) -> Any:
        async def handle(packet: Packet) -> InboundResult:
            try:
                record, _created = await self.submit(packet.body, client)
            except GatewayError as exc:
                return InboundResult.refused(exc)
            return InboundResult(True, reference=record.id)

        return handle

    async def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        worker = getattr(self, "worker", None)
        if worker is not None:
            await worker.stop()
        for watcher in self._watchers:
            await watcher.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, GatewayError):
                await task
        self._tasks.clear()
        for transport in self.transports.values():
            await transport.aclose()
        if hasattr(self, "sync"):
            await self.sync.aclose()
        if hasattr(self, "store"):
            await self.store.close()

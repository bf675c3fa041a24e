"""The running gateway: the message core, the store, protection, the pipelines, transports and the worker,
wired together once and closed in reverse order. ``serve``, ``replay`` and the integration tests all
build one of these; the aiohttp app (api/app.py) holds it for its handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from gateway.ehr import EhrDelivery
from gateway.errors import ConfigError, GatewayError
from gateway.log import get_logger
from gateway.pipeline.inbound import InboundPipeline
from gateway.pipeline.outbound import Client, OutboundPipeline
from gateway.pipeline.receipts import Receipts
from gateway.registry import Register
from gateway.scheduler import Housekeeping, guarded, start_scheduler
from gateway.security.devpki import ensure_dev_pki
from gateway.security.protection import MessageProtection, NoProtection, build_protection
from gateway.store.base import MessageRecord
from gateway.store.sqlite import SqliteStore
from gateway.transport import InboundResult, Packet, Transport, TransportContext

__all__ = ["Gateway"]

log = get_logger(__name__)


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
        self.store = SqliteStore(settings.in_data_dir("gateway.sqlite"))
        await self.store.open()
        self.protection = self._protection or self._build_protection()
        self.receipts = Receipts(self.core, self.store, self.clock)
        self.inbound = InboundPipeline(self.core, self.store, self.protection, self.receipts, self.clock)
        self.outbound = OutboundPipeline(self.core, self.store, self.clock)
        self.ehr = EhrDelivery(self.register, timeout_s=settings.delivery.send_timeout_s)
        self.housekeeping = Housekeeping(self.store, self.protection, settings, self.clock)
        # CRLs given as URLs are fetched before the first message needs them, not an hour later
        await guarded("crls", self.housekeeping.crls)()
        self.worker = DeliveryWorker(
            store=self.store,
            register=self.register,
            settings=settings,
            protection=self.protection,
            transports=self.transports,
            local_inbound=self._local_inbound,
            ehr=self.ehr,
            clock=self.clock,
            owner=self._worker_owner,
            rng=self._rng,
        )
        await self._start_transports()  # last: a packet may arrive the moment an adapter listens

    def _build_protection(self) -> MessageProtection:
        if self.settings.security.protection == "none":
            return NoProtection()
        if self.settings.security.dev_pki:  # never in production: it would mint certificates for peers
            ensure_dev_pki(self.settings, self.register)
        return build_protection(self.settings, self.register)

    async def _start_transports(self) -> None:
        names = {p.adapter for p in self.register.remote_parties if p.adapter} | set(self.settings.adapters)
        options = {**self.settings.adapters, **(self._adapter_options or {})}
        for name in sorted(names):
            context = TransportContext(
                # the message cap, for adapters that must refuse a body before reading it (folder)
                options={"max_bytes": self.settings.schemas.max_message_bytes, **options.get(name, {})},
                data_dir=str(self.settings.data_dir),
                send_timeout_s=self.settings.delivery.send_timeout_s,
            )
            transport = adapter_class(name)(context)
            await transport.start(self._handler_for(name))
            self.transports[name] = transport

    def _handler_for(self, adapter: str) -> Any:
        async def handle(packet: Packet) -> InboundResult:
            return await self.receive(packet, via=adapter)

        return handle

    async def _local_inbound(self, packet: Packet) -> InboundResult:
        return await self.receive(packet, via="local", local=True)

    # -- what the API, the adapters and the harness call ----------------------------------------------

    async def submit(self, data: bytes, client: Client) -> tuple[MessageRecord, bool]:
        record, created = await self.outbound.submit(data, client)
        self.worker.notify()
        return record, created

    async def receive(self, packet: Packet, *, via: str, local: bool = False) -> InboundResult:
        result = await self.inbound.receive(packet, via=via, local=local)
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
        if hasattr(self, "ehr"):
            await self.ehr.aclose()
        if hasattr(self, "store"):
            await self.store.close()

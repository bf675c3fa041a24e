"""Housekeeping on APScheduler 3.11: receipt deadlines, leases, CRLs, certificate expiry, pruning, upkeep.

Each job is a method of :class:`Housekeeping` (so tests call them with a moved clock) and runs on an
interval with ``max_instances=1`` and ``coalesce`` - a slow run is never overlapped by the next - and a
run that fails is logged with its job name and the next run goes ahead.

Several gateway processes on one store (PostgreSQL) share the work of the jobs that act on the store:
:func:`once_per_turn` lets one process take each period of such a job (``Store.take_turn``), and the others
skip it. The CRL refresh runs in every process: each keeps its own CRL cache.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.clock import Clock
from gateway.config import Settings
from gateway.log import get_logger
from gateway.security.protection import MessageProtection
from gateway.store.base import Store

__all__ = ["Housekeeping", "guarded", "once_per_turn", "start_scheduler"]

log = get_logger(__name__)
_DAY = 86400.0


class Housekeeping:
    def __init__(self, store: Store, protection: MessageProtection, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.protection = protection
        self.settings = settings
        self.clock = clock

    async def receipts(self) -> tuple[int, int]:
        """Warn once about deliveries whose AppRec is late, mark overdue the ones past the deadline."""
        now = self.clock.now()
        late = await self.store.mark_receipt_warnings(now=now)
        for message_id, delivery_id, receiver in late:
            log.warning(
                "delivery.receipt_late",
                code="delivery.receipt_late",
                message_id=message_id,
                delivery=delivery_id,
                receiver=receiver,
            )
        overdue = await self.store.mark_overdue(now=now)
        for message_id, delivery_id, receiver in overdue:
            log.warning(
                "delivery.overdue",
                code="delivery.overdue",
                message_id=message_id,
                delivery=delivery_id,
                receiver=receiver,
            )
        return len(late), len(overdue)

    async def leases(self) -> int:
        """Take back deliveries whose worker died mid-send (the lease ran out) - logged once each time."""
        reaped = await self.store.reap_leases(now=self.clock.now())
        if reaped:
            log.warning("queue.leases_expired", code="queue.leases_expired", deliveries=reaped)
        return reaped

    async def crls(self) -> None:
        """Fetch the configured CRLs again (URLs over HTTP, files from disk)."""
        timeout = aiohttp.ClientTimeout(total=self.settings.security.crl_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def fetch(url: str) -> bytes:
                async with session.get(url) as response:
                    response.raise_for_status()
                    return await response.read()

            await self.protection.refresh_crls(fetch)

    async def certificates(self) -> list[tuple[str, int]]:
        """Warn 30, 14 and 7 days (configurable) before a certificate expires - once per threshold."""
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        thresholds = sorted(self.settings.housekeeping.certificate_warning_days)
        warned = []
        for cert in self.protection.certificates():
            days = (cert.not_after - now).total_seconds() / _DAY
            due = [t for t in thresholds if days <= t]
            if not due:
                continue
            threshold = 0 if days <= 0 else due[0]
            key = f"cert-warned:{cert.issuer}:{cert.serial}:{threshold}"
            if await self.store.get_meta(key) is not None:
                continue
            await self.store.set_meta(key, now.isoformat())
            event = "security.certificate_expired_in_use" if threshold == 0 else "security.certificate_expiring"
            log.warning(
                event,
                code=event,
                party=cert.her_id,
                role=cert.role,
                subject=cert.subject,
                serial=cert.serial,
                issuer=cert.issuer,
                source=cert.source,
                not_after=cert.not_after.isoformat(),
                days_left=round(days, 1),
            )
            warned.append((cert.serial, threshold))
        return warned

    async def prune(self) -> int:
        """Drop the payload of finished messages after the retention period; metadata and trace stay."""
        now = self.clock.now()
        pruned = await self.store.prune(before=now - self.settings.housekeeping.retention_days * _DAY, now=now)
        if pruned:
            log.info("store.pruned", messages=pruned)
        return pruned

    async def maintenance(self) -> None:
        await self.store.maintain()


def once_per_turn(
    name: str, job: Callable[[], Awaitable[object]], *, every_s: float, store: Store, clock: Clock, owner: str
) -> Callable[[], Awaitable[object]]:
    """``job``, run only when this process takes the current period of it (one ``every_s`` long) on the store."""

    async def run() -> object:
        now = clock.now()
        if not await store.take_turn(name, int(now // every_s), owner=owner, now=now):
            return None  # another process of this store runs it this period
        return await job()

    return run


def guarded(name: str, job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:  # one failing run must not stop the job
            log.exception("job.failed", code="job.failed", job=name)

    return run


def start_scheduler(housekeeping: Housekeeping, settings: Settings) -> AsyncIOScheduler:
    """Start every housekeeping job on the running event loop."""
    h = settings.housekeeping
    scheduler = AsyncIOScheduler(timezone=UTC)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    # (name, job, interval, run once at start, once per period across the store's processes) - the CRLs were
    # fetched as the gateway opened
    jobs: list[tuple[str, Callable[[], Awaitable[object]], float, bool, bool]] = [
        ("receipts", housekeeping.receipts, h.deadline_check_s, True, True),
        ("leases", housekeeping.leases, h.lease_reaper_s, False, True),
        ("crls", housekeeping.crls, settings.security.crl_refresh_s, False, False),
        ("certificates", housekeeping.certificates, 6 * 3600.0, True, True),
        ("prune", housekeeping.prune, 3600.0, False, True),
        ("maintenance", housekeeping.maintenance, h.maintenance_s, False, True),
    ]
    for name, job, seconds, at_start, shared in jobs:
        first = {"next_run_time": datetime.now(UTC)} if at_start else {}
        if shared:
            job = once_per_turn(
                name, job, every_s=seconds, store=housekeeping.store, clock=housekeeping.clock, owner=owner
            )
        scheduler.add_job(
            guarded(name, job),
            "interval",
            seconds=seconds,
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(seconds)),
            **first,
        )
    scheduler.start()
    return scheduler

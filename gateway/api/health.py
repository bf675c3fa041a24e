"""``/healthz``: cheap, without a token, and honest about the parts a submission waits on.

Besides the queue counts (one count of the store at a time, reused for a second) it checks that the worker
threads answer - the default executor that ``asyncio.to_thread`` hands parsing, validation and CMS work to -
and that the store answers, each within ``limits.health_timeout_s``. If either does not, the answer is 503
``{"status": "degraded", "checks": ...}`` instead of a cheerful ok while every submission times out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from gateway.api.keys import GATEWAY
from gateway.log import get_logger
from gateway.store.base import Store

__all__ = ["PROBE", "STORE_PROBE", "StoreProbe", "ThreadProbe", "routes"]

log = get_logger(__name__)
routes = web.RouteTableDef()
_STARTED = time.time()


def _nothing() -> None:
    """What the probe runs on a worker thread."""


class ThreadProbe:
    """Runs a no-op through the default executor. One probe at a time: while a probe is still queued
    behind stuck workers, the next health check waits on that one instead of queueing another."""

    def __init__(self) -> None:
        self._pending: asyncio.Task[None] | None = None

    async def answers(self, timeout_s: float) -> bool:
        """Whether a worker thread ran the no-op within ``timeout_s``."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(asyncio.to_thread(_nothing))
            self._pending.add_done_callback(_settle)
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._pending)
        except TimeoutError:
            return False
        return True


def _settle(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a probe nobody waits for any more (an executor shut down) is not an error to report


class StoreProbe:
    """The store's counts for ``/healthz``: one query at a time, and its answer reused for ``fresh_s`` -
    an unauthenticated probe must not make the store count its tables once per request."""

    def __init__(self, fresh_s: float = 1.0) -> None:
        self.fresh_s = fresh_s
        self._pending: asyncio.Task[dict[str, int]] | None = None
        self._counts: dict[str, int] | None = None
        self._at = 0.0

    async def counts(self, store: Store, timeout_s: float) -> dict[str, int] | None:
        """The counts, or None when the store did not answer within ``timeout_s``."""
        if self._counts is not None and time.monotonic() - self._at < self.fresh_s:
            return self._counts
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(store.counts())
            self._pending.add_done_callback(_settle)
        try:
            async with asyncio.timeout(timeout_s):
                self._counts = await asyncio.shield(self._pending)
        except TimeoutError:
            return None
        self._at = time.monotonic()
        return self._counts


PROBE = web.AppKey("thread_probe", ThreadProbe)
STORE_PROBE = web.AppKey("store_probe", StoreProbe)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    timeout_s = gateway.settings.limits.health_timeout_s
    workers, counts = await asyncio.gather(
        request.app[PROBE].answers(timeout_s), request.app[STORE_PROBE].counts(gateway.store, timeout_s)
    )
    checks = {"workers": "ok" if workers else "stuck", "store": "ok" if counts is not None else "stuck"}
    healthy = workers and counts is not None
    if not healthy:
        log.warning("health.degraded", code="health.degraded", **checks)
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "name": gateway.settings.gateway.name,
        "uptime_s": round(time.time() - _STARTED, 1),
        "checks": checks,
        "queue": {k.removeprefix("deliveries."): v for k, v in (counts or {}).items() if k.startswith("deliveries.")},
        "unchecked_kinds": gateway.core.unchecked_kinds(),
    }
    return web.json_response(body, status=200 if healthy else 503)

"""Handling received messages side by side, a bounded number at a time (Helsenorge.Messaging's
``ProcessingTasks``): one message that takes long - a slow EHR answering a synchronous request, a packet
that does not verify and is answered no sooner than ``[security] unverified_answer_s`` - must not hold up
the messages behind it on its queue. When every slot is busy, the queue's consumer waits for one, so the
next message stays on the bus, unsettled, until there is room (back-pressure, nothing taken and dropped)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from adapters.amqp.bus import Incoming
from gateway.log import get_logger

__all__ = ["Workers"]

log = get_logger(__name__)


class Workers:
    def __init__(self, size: int) -> None:
        self._slots = asyncio.Semaphore(max(1, size))
        self._working: set[asyncio.Task[None]] = set()

    async def start(self, incoming: Incoming, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` (the handling of ``incoming``) on a task of its own once a slot is free (waiting for
        one here)."""
        await self._slots.acquire()
        task = asyncio.create_task(_run(incoming, work))
        self._working.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._working.discard(task)
        self._slots.release()

    async def aclose(self) -> None:
        """Cancel what is running and wait for it (an unsettled message goes back to its queue)."""
        for task in self._working:
            task.cancel()
        await asyncio.gather(*self._working, return_exceptions=True)


async def _run(incoming: Incoming, work: Callable[[], Awaitable[None]]) -> None:
    try:
        await work()
    except Exception:  # a bug in the handling: the message goes back (and, in the end, to _dl)
        log.exception("amqp.callback_failed", address=incoming.address)
        incoming.release()

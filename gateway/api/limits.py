"""What one client, and all clients together, may hold of the HTTP service (docs/api.md, Limits).

- **Per client** (the token's client name under ``/v1``, else the peer address): at most
  ``limits.max_concurrent_per_client`` requests in flight; one more is answered 429 at once.
- **All together**: at most ``limits.max_concurrent_requests`` requests, declaring at most
  ``limits.max_body_bytes_in_flight`` body bytes, are read and handled at once. A request that does not
  fit waits up to ``limits.queue_wait_s``, then gets 503. The gate is taken *before* the body is read, so
  a waiting request holds a socket and aiohttp's small read buffer, never its body.
- **Time**: the body must arrive within ``limits.body_read_timeout_s`` (408).
- **Form**: bodies travel as they are; a ``Content-Encoding`` other than identity is refused (415) before
  anything is read, and a body declaring more than the size cap is refused (413) unread.

The body is read here, once, under those limits; a handler's own ``await request.read()`` then returns the
bytes aiohttp keeps. Every refusal is a :class:`Refusal`: the API's JSON error shape, one log line, the
connection closed when the body was left unread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from aiohttp import hdrs, web

from gateway.api.keys import client_of
from gateway.config import LimitsSettings
from gateway.errors import (
    BadBody,
    Busy,
    ClientGone,
    MessageTooLarge,
    ReadTimeout,
    TooManyRequests,
    UnsupportedEncoding,
)

__all__ = ["LIMITER", "Limiter", "limit_requests", "read_body"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HEALTH_PATH = "/healthz"


class Limiter:
    """The per-client counts and the gate of one app."""

    def __init__(self, limits: LimitsSettings, max_body: int) -> None:
        self.limits = limits
        self.max_body = max_body
        self._by_client: dict[str, int] = {}
        self._held = 0
        self._bytes = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def held_by(self, key: str) -> int:
        """How many requests of client ``key`` are in flight."""
        return self._by_client.get(key, 0)

    @property
    def in_flight(self) -> tuple[int, int]:
        """Requests, and their declared body bytes, being read and handled now."""
        return self._held, self._bytes

    @contextmanager
    def per_client(self, key: str) -> Iterator[None]:
        """One of the client's slots, or :class:`TooManyRequests` at once."""
        held = self._by_client.get(key, 0)
        if held >= self.limits.max_concurrent_per_client:
            raise TooManyRequests(
                f"This client has {held} requests in flight; wait for their answers before sending more.",
                retry_after_s=self.limits.retry_after_s,
            )
        self._by_client[key] = held + 1
        try:
            yield
        finally:
            left = self._by_client[key] - 1
            if left:
                self._by_client[key] = left
            else:
                del self._by_client[key]  # the table holds only clients with requests in flight

    @asynccontextmanager
    async def gate(self, size: int) -> AsyncIterator[None]:
        """A place among the requests read and handled at once, for a body of ``size`` declared bytes;
        :class:`Busy` when none comes free within ``queue_wait_s``."""
        size = min(size, self.limits.max_body_bytes_in_flight)  # a body over the budget runs alone
        if not await self._enter(size):
            raise Busy(
                "The gateway is handling as many requests as it takes at once; try again shortly.",
                retry_after_s=self.limits.retry_after_s,
            )
        try:
            yield
        finally:
            self._held -= 1
            self._bytes -= size
            for waiter in self._waiters:  # each re-checks whether it fits now
                if not waiter.done():
                    waiter.set_result(None)

    def _fits(self, size: int) -> bool:
        limits = self.limits
        return self._held < limits.max_concurrent_requests and self._bytes + size <= limits.max_body_bytes_in_flight

    async def _enter(self, size: int) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.queue_wait_s
        while not self._fits(size):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                return False
            finally:
                self._waiters.discard(waiter)
        self._held += 1  # no await between the check and taking the place
        self._bytes += size
        return True


LIMITER = web.AppKey("limiter", Limiter)


def client_key(request: web.Request) -> str:
    """Whose slots a request counts against: the token's client under ``/v1`` (an unknown token is
    refused here, before anything is read), else the peer address."""
    if request.path.startswith("/v1/"):
        return "client:" + client_of(request).name
    return f"peer:{request.remote or '?'}"


def declared_size(request: web.Request, max_body: int) -> int:
    """The body bytes a request says it brings: its Content-Length, or the cap when it is chunked."""
    if not request.body_exists:
        return 0
    length = request.content_length
    if length is not None and length > max_body:
        raise MessageTooLarge("The request body is larger than this gateway accepts.")
    return max_body if length is None else length


def check_encoding(request: web.Request) -> None:
    """Only identity bodies: no client of this API compresses, and decoding one is work (and a bomb's
    multiplier) spent before anything is known about the sender (docs/api.md, Limits)."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if request.body_exists and encoding not in ("", "identity"):
        raise UnsupportedEncoding("Send the body as it is: this gateway takes no Content-Encoding.")


async def read_body(request: web.Request, timeout_s: float) -> None:
    """Read the whole body within ``timeout_s``; aiohttp keeps it for the handler's ``read()``."""
    if not request.body_exists:
        return
    try:
        async with asyncio.timeout(timeout_s):
            await request.read()
    except TimeoutError:
        raise ReadTimeout(f"The request body did not arrive within {timeout_s:g} s.") from None
    except web.RequestPayloadError:
        raise BadBody("The request body could not be read: its chunked framing is broken.") from None
    except ConnectionResetError:
        raise ClientGone("The client closed the connection before the body arrived.") from None


@web.middleware
async def limit_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the limits around every routed request; /healthz takes no place at the gate."""
    if request.match_info.http_exception is not None:  # no such route (404/405): nothing is read
        return await handler(request)
    limiter = request.app[LIMITER]
    with limiter.per_client(client_key(request)):
        if request.path == HEALTH_PATH:
            return await handler(request)
        check_encoding(request)
        async with limiter.gate(declared_size(request, limiter.max_body)):
            await read_body(request, limiter.limits.body_read_timeout_s)
            return await handler(request)

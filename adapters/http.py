"""The ``http`` adapter: gateway-to-gateway POST of a packet, with NHN's AMQP routing metadata as headers.

Sending: ``POST <endpoint>`` with the packet as the body and ``X-Message-Id``, ``X-From-Her-Id``,
``X-To-Her-Id``, ``X-Subject``, ``X-Application-Timestamp`` and ``Content-Type``. A 2xx means the peer has
stored it durably. 408, 425, 429 and 5xx mean "try again later"; any other 4xx is a refusal for good,
whose JSON body (``{"error": {"condition", "code", "event", "message"}}``) is kept for the trace.

Receiving is an endpoint of the gateway's own aiohttp app, ``POST /transport/http``: :func:`receiving_route`
builds it around the gateway's inbound handler.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web

from adapters.bodies import read_head
from gateway.errors import PermanentDeliveryError, TransportError
from gateway.transport import (
    InboundHandler,
    InboundResult,
    Packet,
    Transport,
    TransportContext,
    retry_after,
    retryable_status,
)

__all__ = ["RECEIVING_PATH", "HttpTransport", "receiving_route"]

RECEIVING_PATH = "/transport/http"


class HttpTransport(Transport):
    name = "http"

    def __init__(self, context: TransportContext | None = None) -> None:
        super().__init__(context)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.context.send_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)
        return self._session

    async def send(self, packet: Packet) -> None:
        if not packet.destination.startswith(("http://", "https://")):
            raise PermanentDeliveryError(f"http adapter: {packet.destination!r} is not an http(s) endpoint.")
        try:
            async with self._client().post(
                packet.destination, data=packet.body, headers=packet.headers(), allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return
                error = _error_body(await read_head(resp.content, 65536))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"POST {packet.destination} failed: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
        said = error.get("message") or f"HTTP {resp.status}"
        if 300 <= resp.status < 400:  # a redirect would turn the POST into a bodyless GET: never follow one
            raise PermanentDeliveryError(
                f"{packet.destination} redirects ({resp.status}) to {resp.headers.get('Location', '?')}; "
                "fix the endpoint in the register."
            )
        if retryable_status(resp.status):
            raise TransportError(
                f"{packet.destination} answered {resp.status}: {said}",
                retry_after_s=retry_after(resp.headers.get("Retry-After")),
            )
        raise PermanentDeliveryError(
            f"{packet.destination} refused the packet ({resp.status}): {said}",
            apprec_code=error.get("code"),
            condition=error.get("condition"),
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _error_body(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return {k: str(v) for k, v in error.items() if v is not None} if isinstance(error, dict) else {}


def receiving_route(handler: InboundHandler) -> web.RouteDef:
    """``POST /transport/http``: a 2xx only once the packet is stored durably."""

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            packet = Packet.from_headers(body, request.headers, destination=str(request.rel_url))
        except ValueError as exc:
            return _refusal(400, "transport:required-field-missing", None, "transport.bad_request", str(exc))
        result: InboundResult = await handler(packet)
        if result.accepted:
            return web.json_response({"id": result.reference, "state": "stored"}, status=202)
        if result.retry_later:
            response = _refusal(503, result.condition, result.code, result.event, result.message)
            response.headers["Retry-After"] = "60"
            return response
        status = 403 if (result.condition or "").startswith("abuse:") else 422
        return _refusal(status, result.condition, result.code, result.event, result.message)

    return web.post(RECEIVING_PATH, receive)


def _refusal(status: int, condition: str | None, code: str | None, event: str | None, message: str) -> web.Response:
    return web.json_response(
        {"error": {"condition": condition, "code": code, "event": event, "message": message}}, status=status
    )

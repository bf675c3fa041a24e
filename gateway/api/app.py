"""The aiohttp app: /v1/messages, /v1/inbox, /v1/admin, /transport/http, /healthz.

Every error leaves as JSON ``{"error": {"code", "event", "message"}}`` with the KITH code where there is
one; bad input is a 4xx, never a 500. The gateway itself is a resource of the app (cleanup_ctx): opened
before the first request, its worker started, and closed after the last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from adapters.http import receiving_route
from gateway.api import admin, inbox, messages
from gateway.api.auth import Authenticator, dev_token
from gateway.api.keys import AUTH, GATEWAY
from gateway.api.views import error_body
from gateway.errors import GatewayError, MessageTooLarge
from gateway.log import get_logger
from gateway.service import Gateway

__all__ = ["create_app"]

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        if exc.http_status >= 500:
            log.error("api.failed", code=exc.event, path=request.path)
        return web.json_response(error_body(exc), status=exc.http_status)
    except web.HTTPRequestEntityTooLarge:
        too_large = MessageTooLarge("The request body is larger than this gateway accepts.")
        return web.json_response(error_body(too_large), status=413)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("api.internal_error", code="api.internal_error", path=request.path)
        return web.json_response(
            {"error": {"code": None, "event": "api.internal_error", "message": "Internal error; see the gateway log."}},
            status=500,
        )


def create_app(gateway: Gateway, *, announce: Callable[[str], None] | None = None) -> web.Application:
    """The app around ``gateway``; ``announce`` is told the dev token when one is made."""
    settings = gateway.settings
    app = web.Application(middlewares=[errors_as_json], client_max_size=settings.schemas.max_message_bytes + 64 * 1024)
    app[GATEWAY] = gateway
    dev = None
    if not settings.api.tokens:
        dev, made = dev_token(settings.data_dir)
        if announce is not None:
            announce(dev if made else "")
    app[AUTH] = Authenticator.from_settings(settings, dev=dev)
    app.cleanup_ctx.append(_gateway_lifetime)
    app.add_routes(messages.routes)
    app.add_routes(inbox.routes)
    app.add_routes(admin.routes)

    async def from_http(packet):  # type: ignore[no-untyped-def]
        return await gateway.receive(packet, via="http")

    app.add_routes([receiving_route(from_http)])
    return app


async def _gateway_lifetime(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    await gateway.open()
    gateway.start_background()
    log.info(
        "gateway.started",
        gateway=gateway.settings.gateway.name,
        parties=len(gateway.register),
        transports=sorted(gateway.transports),
    )
    yield
    await gateway.close()
    log.info("gateway.stopped", gateway=gateway.settings.gateway.name)

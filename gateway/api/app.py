"""The aiohttp app: /v1/messages, /v1/inbox, /v1/sync, /v1/admin, /transport/http, /healthz.

Every error leaves as JSON ``{"error": {"code", "event", "message"}}`` with the KITH code where there is
one; bad input is a 4xx, never a 500 - including a body that breaks off, arrives too slowly or is refused
by a limit (gateway/api/limits.py), and a path or method with no route. Errors aiohttp's parser answers
before the app sees a request get the same shape in gateway/api/server.py. The gateway itself is a
resource of the app (cleanup_ctx): opened before the first request, its worker started, and closed after
the last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from adapters.http import receiving_route
from gateway.api import admin, health, inbox, messages, sync
from gateway.api.auth import Authenticator, dev_token
from gateway.api.keys import AUTH, GATEWAY
from gateway.api.limits import LIMITER, Limiter, limit_requests
from gateway.api.views import error_body
from gateway.errors import ClientGone, GatewayError, MessageTooLarge, Refusal
from gateway.log import get_logger
from gateway.service import Gateway

__all__ = ["create_app"]

log = get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: aiohttp's own 4xx (no route, a wrong method) in the API's words; the path is not echoed
_ROUTING = {
    404: ("api.not_found", "There is no such resource; see docs/api.md."),
    405: ("api.method_not_allowed", "That method is not allowed on this resource; see the Allow header."),
}


def _error(status: int, event: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": None, "event": event, "message": message}}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except Refusal as exc:
        getattr(log, exc.level)(exc.event, code=exc.event, method=request.method, path=request.path)
        response = web.json_response(error_body(exc), status=exc.http_status, headers=exc.headers())
    except GatewayError as exc:
        if exc.http_status >= 500:
            log.error("api.failed", code=exc.event, path=request.path)
        response = web.json_response(error_body(exc), status=exc.http_status)
    except ConnectionResetError:  # the client went away (aiohttp's ClientConnectionResetError is one)
        gone = ClientGone("The client closed the connection.")
        log.info(gone.event, code=gone.event, method=request.method, path=request.path)
        response = web.json_response(error_body(gone), status=gone.http_status)
    except web.HTTPRequestEntityTooLarge:
        too_large = MessageTooLarge("The request body is larger than this gateway accepts.")
        response = web.json_response(error_body(too_large), status=413)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        event, message = _ROUTING.get(exc.status, ("api.bad_request", exc.reason))
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = _error(exc.status, event, message, allow)
    except Exception:
        log.exception("api.internal_error", code="api.internal_error", path=request.path)
        response = _error(500, "api.internal_error", "Internal error; see the gateway log.")
    if response.status >= 400 and request.body_exists and not request.content.is_eof():
        response.force_close()  # the body was left unread: the connection cannot carry another request
    return response


def create_app(gateway: Gateway, *, announce: Callable[[str], None] | None = None) -> web.Application:
    """The app around ``gateway``; ``announce`` is told the dev token when one is made."""
    settings = gateway.settings
    max_body = settings.schemas.max_message_bytes + 64 * 1024
    app = web.Application(middlewares=[errors_as_json, limit_requests], client_max_size=max_body)
    app[GATEWAY] = gateway
    app[LIMITER] = Limiter(settings.limits, max_body)
    app[health.PROBE] = health.ThreadProbe()
    app[health.STORE_PROBE] = health.StoreProbe()
    dev = None
    if not settings.api.tokens:
        dev, made = dev_token(settings.data_dir)
        if announce is not None:
            announce(dev if made else "")
    app[AUTH] = Authenticator.from_settings(settings, dev=dev)
    app.cleanup_ctx.append(_gateway_lifetime)
    app.add_routes(messages.routes)
    app.add_routes(health.routes)
    app.add_routes(inbox.routes)
    app.add_routes(sync.routes)
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

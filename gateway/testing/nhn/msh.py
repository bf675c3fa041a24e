"""The simulated NHN Meldingstjener REST API ("EDI 2.0"), versions 3 and 2: the app and its routing.

``create_msh_app(Simulator(...), authorizer)`` serves both versions on the same paths, chosen by the
``api-version`` header as NHN does (ASP.NET routes match case-insensitively, so ``/Messages`` and
``/messages`` are one path; the header decides whose handler answers). Each API request is taken in the
order NHN's pipeline takes it:

1. armed faults (``faults.py``): a proxy or rate limiter in front answers before NHN sees anything;
2. ``api-version``: missing, or other than ``2`` and ``3``, is 400 with problem details (as ASP.NET API
   versioning answers);
3. the route within that version (unknown 404, wrong method 405, in the version's error body);
4. the :data:`~gateway.testing.nhn.principal.Authorizer` (its 401 goes out as it raises it);
5. ``nhn-source-system`` (400 in the version's error body);
6. the handler: the 35 MB body limit (``Content-Length`` checked before reading), the media type (415),
   the JSON and its fields (400 with ``validationErrors``), HER-id authorisation (403 "Not authorized for
   HerId(s): …"), in v3 the configuration (400) and the client lock (423), then the state.

Error bodies (``msh_errors.py``): v3 ``MshApiProblemDetails`` (``application/problem+json``), v2
``ErrorMessage``. ``/_sim/…`` is the simulator's own control API (``msh_control.py``: faults, the clock,
the peers) for a test that runs the simulator in another process; it is no part of NHN's API and takes no
credentials. The :class:`Simulator` is ``msh_simulator.py``, the :class:`Call` a handler gets
``msh_call.py``; their names stay importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.log import get_logger
from gateway.testing.nhn import msh_v2, msh_v3
from gateway.testing.nhn.msh_call import Call
from gateway.testing.nhn.msh_control import add_control_routes
from gateway.testing.nhn.msh_errors import error_response, fault_response
from gateway.testing.nhn.msh_simulator import MAX_REQUEST_BYTES, SIMULATOR, Simulator
from gateway.testing.nhn.msh_state import MshError
from gateway.testing.nhn.principal import Authorizer

__all__ = ["MAX_REQUEST_BYTES", "SIMULATOR", "Call", "Simulator", "create_msh_app", "error_response"]

log = get_logger(__name__)

_AUTHORIZER: web.AppKey[Authorizer] = web.AppKey("nhn_msh_authorizer")


# --- dispatch -----------------------------------------------------------------------------------------

_ROUTES = {"2": msh_v2.ROUTES, "3": msh_v3.ROUTES}


def _route(version: str, method: str, path: str) -> tuple[msh_v3.Handler, dict[str, str]] | str:
    """The handler and path parameters, or "404"/"405"."""
    segments = [s for s in path.split("/") if s]
    allowed = False
    for route_method, pattern, handler in _ROUTES[version]:
        parts = [s for s in pattern.split("/") if s]
        if len(parts) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{"):
                params[part.strip("{}")] = segment
            elif part.lower() != segment.lower():
                break
        else:
            if route_method == method:
                return handler, params
            allowed = True
    return "405" if allowed else "404"


async def _dispatch(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    request_id = str(uuid.uuid4())
    header = request.headers.get("api-version")
    version = header if header in _ROUTES else None
    fault = sim.faults.take_request_fault(request.method, request.path)
    if fault is not None and (answer := await fault_response(fault, sim)) is not None:
        return error_response(version, request, request_id, sim, *answer)
    if version is None:
        text = (
            "An API version is required (the api-version header)."
            if header is None
            else (f"The HTTP resource that matches the request URI does not support the API version '{header}'.")
        )
        return error_response(None, request, request_id, sim, MshError(400, text))
    found = _route(version, request.method, request.path)
    if isinstance(found, str):
        refusal = MshError(404, "Not Found") if found == "404" else MshError(405, "Method Not Allowed")
        return error_response(version, request, request_id, sim, refusal)
    principal = await request.app[_AUTHORIZER](request)
    if not request.headers.get("nhn-source-system", "").strip():
        refusal = MshError.invalid(["The nhn-source-system header is required (name and version of the client)."])
        return error_response(version, request, request_id, sim, refusal)
    handler, params = found
    try:
        return await handler(Call(request, sim, principal, version, params, request_id))
    except MshError as exc:
        return error_response(version, request, request_id, sim, exc)
    except (web.HTTPException, asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("sim.msh_internal_error", code="sim.msh_internal_error", path=request.path)
        return error_response(version, request, request_id, sim, MshError(500, "An unknown error occurred"))


# --- the app ------------------------------------------------------------------------------------------


def create_msh_app(
    simulator: Simulator, authorizer: Authorizer, *, tick_interval: float | None = None, control: bool = True
) -> web.Application:
    """The MSH API (v3 and v2) of ``simulator``; ``authorizer`` is asked on every API request. With
    ``tick_interval`` the peers' steps run by the wall clock in the background (``gateway sim nhn``);
    without it they run when a test calls ``simulator.advance()``."""
    # 1500 repeated HerIds make a request line of some 30 KB: more than aiohttp's 8 KB default
    app = web.Application(handler_args={"max_line_size": 64 * 1024})
    app[SIMULATOR] = simulator
    app[_AUTHORIZER] = authorizer
    if control:
        add_control_routes(app)
    app.router.add_route("*", "/{tail:.*}", _dispatch)

    async def close_streams(app: web.Application) -> None:
        app[SIMULATOR].close()

    app.on_shutdown.append(close_streams)
    if tick_interval:
        app.cleanup_ctx.append(_ticker(tick_interval))
    return app


def _ticker(interval: float) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def run(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(app[SIMULATOR].network.run(interval))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run

"""The simulated NHN Meldingstjener REST API ("EDI 2.0"), versions 3 and 2: the app, its routing, and what
every call shares.

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

Error bodies: v3 ``MshApiProblemDetails`` (``application/problem+json``), v2 ``ErrorMessage``.
``/_sim/…`` is the simulator's own control API (faults, the clock, the peers) for a test that runs the
simulator in another process; it is no part of NHN's API and takes no credentials.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import uuid
from base64 import b64decode
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.config import resource_dir
from gateway.log import get_logger
from gateway.model.kinds import Catalog, load_catalog
from gateway.testing.nhn import msh_v2, msh_v3
from gateway.testing.nhn.faults import Fault, Faults
from gateway.testing.nhn.msh_state import MessageRecord, MshError, MshState, iso
from gateway.testing.nhn.peers import EdiNetwork, Peer, PeerScript
from gateway.testing.nhn.principal import Authorizer, Principal

__all__ = ["MAX_REQUEST_BYTES", "SIMULATOR", "Call", "Simulator", "create_msh_app", "error_response"]

log = get_logger(__name__)

#: NHN's documented request limit ("The request has a max limit of 35 MB").
MAX_REQUEST_BYTES = 35 * 1024 * 1024
_INT32_MAX = 2**31 - 1
_JSON_TYPES = ("application/json", "text/json")
_PROBLEM_TYPES = {
    400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    401: "https://tools.ietf.org/html/rfc9110#section-15.5.2",
    403: "https://tools.ietf.org/html/rfc9110#section-15.5.4",
    404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
    405: "https://tools.ietf.org/html/rfc9110#section-15.5.6",
    415: "https://tools.ietf.org/html/rfc9110#section-15.5.16",
    423: "https://tools.ietf.org/html/rfc4918#section-11.3",
    429: "https://tools.ietf.org/html/rfc6585#section-4",
    500: "https://tools.ietf.org/html/rfc9110#section-15.6.1",
    503: "https://tools.ietf.org/html/rfc9110#section-15.6.4",
}


class Simulator:
    """One simulated NHN: the state both API versions share, the EDI peers, the faults and the clock."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        catalog: Catalog | None = None,
        api_users: Iterable[str] = (),
        first_offset: int = 1000,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        heartbeat: float = 15.0,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.faults = Faults()
        catalog = catalog or load_catalog(resource_dir("schemas") / "catalog.toml")
        self.state = MshState(self.clock, catalog, api_users=api_users, first_offset=first_offset)
        self.state.log.duplicate = self.faults.take_duplicate
        self.network = EdiNetwork(self.state, self.clock)
        self.max_request_bytes = max_request_bytes
        #: seconds between SSE comment lines while a stream has nothing to say
        self.heartbeat = heartbeat

    def add_peer(self, her_id: str, name: str = "", script: PeerScript | None = None) -> Peer:
        return self.network.add_peer(her_id, name, script)

    def advance(self, seconds: float = 0.0) -> int:
        """Move the (manual) clock on and run the peers' steps that are then due."""
        return self.network.advance(seconds)

    def close(self) -> None:
        """End every open notification stream (the server is stopping)."""
        self.state.log.close()


SIMULATOR = web.AppKey("nhn_msh_simulator", Simulator)
_AUTHORIZER: web.AppKey[Authorizer] = web.AppKey("nhn_msh_authorizer")


@dataclass
class Call:
    """One API request after routing and authentication: who asks, in which version, and the helpers
    every handler uses to read and check what was asked."""

    request: web.Request
    sim: Simulator
    principal: Principal
    version: str
    params: dict[str, str]
    request_id: str

    @property
    def state(self) -> MshState:
        return self.sim.state

    # query and path ---------------------------------------------------------------------------------

    def query_values(self, name: str) -> list[str]:
        """A query parameter's values, the name matched case-insensitively (ASP.NET model binding)."""
        return [v for k, v in self.request.query.items() if k.lower() == name.lower()]

    def query_int(self, name: str, errors: list[str], *, low: int, high: int, default: int | None = None) -> int | None:
        values = self.query_values(name)
        if not values:
            return default
        try:
            value = int(values[0])
        except ValueError:
            errors.append(f"The value '{values[0]}' is not valid for {name}.")
            return None
        if not low <= value <= high:
            errors.append(f"{name} must be between {low} and {high}.")
            return None
        return value

    def query_her_ids(self, name: str, errors: list[str], *, max_items: int) -> list[str]:
        """1 to ``max_items`` unique HER-ids, the parameter repeated (``HerIds=1&HerIds=2``)."""
        values = self.query_values(name)
        ids = [self.her_id(_int_or_text(v), name, errors) for v in values]
        if not values:
            errors.append(f"The {name} field is required.")
        elif len(values) > max_items or len(set(values)) != len(values):
            errors.append(f"{name} must hold 1 to {max_items} unique HER-ids.")
        return [h for h in ids if h]

    def path_uuid(self, name: str = "id") -> str:
        value = self.params[name]
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise MshError.invalid([f"The value '{value}' is not valid for {name}: a GUID is required."]) from None

    def path_her_id(self, name: str) -> str:
        errors: list[str] = []
        her = self.her_id(_int_or_text(self.params[name]), name, errors)
        if her is None:
            raise MshError.invalid(errors)
        return her

    # the body ---------------------------------------------------------------------------------------

    async def json_body(self) -> dict[str, Any]:
        """The JSON object of the request, at most ``max_request_bytes`` long (unknown fields are kept,
        and the handlers ignore them, as NHN's tolerant model binding does)."""
        limit = self.sim.max_request_bytes
        length = self.request.content_length
        if length is not None and length > limit:
            raise _too_large(limit)
        media = (self.request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not (media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))):
            raise MshError(415, f"Unsupported Media Type: {media or 'none'}; send application/json.")
        chunks, size = [], 0
        async for chunk in self.request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            raise MshError.invalid(["A non-empty request body is required."])
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MshError.invalid([f"The request body is not valid JSON: {exc}"]) from None
        if not isinstance(body, dict):
            raise MshError.invalid(["The request body must be a JSON object."])
        return body

    @staticmethod
    def her_id(value: Any, name: str, errors: list[str], *, required: bool = True) -> str | None:
        """A HER-id as JSON gives it (an int32 above 0), as digits; None and an error when it is not one."""
        if value is None:
            if required:
                errors.append(f"The {name} field is required.")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _INT32_MAX:
            errors.append(f"{name} must be a HER-id (an integer from 1 to {_INT32_MAX}), not {value!r}.")
            return None
        return str(value)

    def her_id_list(self, value: Any, name: str, errors: list[str]) -> list[str]:
        if not isinstance(value, list) or not value:
            errors.append(f"The {name} field is required and must list at least one HER-id.")
            return []
        ids = [self.her_id(v, f"{name}[{i}]", errors) for i, v in enumerate(value)]
        found = [h for h in ids if h]
        if len(set(found)) != len(found):
            errors.append(f"{name} must not repeat a HER-id.")
        return found

    # authorisation ----------------------------------------------------------------------------------

    def allow(self, her_ids: Iterable[str]) -> None:
        """403 unless the principal may act for every one of ``her_ids``."""
        refused = self.principal.not_allowed(list(dict.fromkeys(her_ids)))
        if refused:
            raise MshError.forbidden(refused)

    def allow_message(self, record: MessageRecord) -> None:
        """403 unless the principal acts for the message's sender or one of its receivers."""
        if not any(self.principal.may_act_for(h) for h in record.parties):
            raise MshError.forbidden(record.parties)

    def json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(data, status=status, headers=headers)


def _int_or_text(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        return value


def _too_large(limit: int) -> MshError:
    return MshError(
        400, f"The request body is too large: the Meldingstjener accepts at most {limit / 2**20:g} MB ({limit} bytes)."
    )


# --- error bodies -------------------------------------------------------------------------------------


def error_response(
    version: str | None,
    request: web.Request,
    request_id: str,
    sim: Simulator,
    error: MshError,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The refusal in the version's shape: v2 ``ErrorMessage``, else v3 ``MshApiProblemDetails``."""
    if version == "2":
        body: dict[str, Any] = {
            "error": error.error,
            "errorCode": error.error_code,
            "validationErrors": error.validation_errors,
            "stackTrace": None,
            "requestId": request_id,
        }
        return web.json_response(body, status=error.status, headers=headers)
    body = {
        "type": _PROBLEM_TYPES.get(error.status),
        "title": _phrase(error.status),
        "status": error.status,
        "detail": error.error,
        "instance": request.path,
        "errorCode": error.error_code,
        "requestId": request_id,
        "validationErrors": error.validation_errors,
        "stackTrace": None,
        "timestamp": iso(sim.clock.now()),
    }
    return web.json_response(body, status=error.status, headers=headers, content_type="application/problem+json")


async def _fault_response(fault: Fault, sim: Simulator) -> tuple[MshError, dict[str, str]] | None:
    if fault.kind == "slow":
        await sim.faults.hold(fault.delay)
        return None
    if fault.kind == "rate_limit":
        return MshError(429, "Too many requests; retry later."), {"Retry-After": str(fault.retry_after)}
    if fault.kind == "token_expired":
        challenge = 'DPoP error="invalid_token", error_description="The access token has expired"'
        return MshError(401, "The access token has expired."), {"WWW-Authenticate": challenge}
    text = "An unknown error occurred" if fault.status == 500 else _phrase(fault.status)
    return MshError(fault.status, text), {}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status a test made up
        return f"Status {status}"


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
    if fault is not None and (answer := await _fault_response(fault, sim)) is not None:
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


# --- the control API (not NHN's) ----------------------------------------------------------------------


async def _control_faults(request: web.Request) -> web.Response:
    faults = request.app[SIMULATOR].faults
    if request.method == "DELETE":
        faults.clear()
    else:
        try:
            faults.arm(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
    return web.Response(status=204)


async def _control_advance(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    try:
        ran = request.app[SIMULATOR].advance(float(body.get("seconds", 0)))
    except (TypeError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"ran": ran})


async def _control_peer_send(request: web.Request) -> web.Response:
    body = await request.json()
    try:
        document = b64decode(str(body["businessDocument"]), validate=True)
        to = [str(h) for h in body.get("receiverHerIds") or []]
        record = request.app[SIMULATOR].network.send(request.match_info["her_id"], document, to or None)
    except (KeyError, ValueError, binascii.Error) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"id": record.id}, status=201)


async def _control_peer_received(request: web.Request) -> web.Response:
    try:
        peer = request.app[SIMULATOR].network.peer(request.match_info["her_id"])
    except KeyError as exc:
        return web.json_response({"error": str(exc)}, status=404)
    return web.json_response(
        [
            {"id": m.id, "senderHerId": int(m.sender), "isAppRec": m.is_apprec, "businessDocumentId": m.info.msg_id}
            for m in peer.received
        ]
    )


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
        app.router.add_route("POST", "/_sim/faults", _control_faults)
        app.router.add_route("DELETE", "/_sim/faults", _control_faults)
        app.router.add_route("POST", "/_sim/advance", _control_advance)
        app.router.add_route("POST", "/_sim/peers/{her_id}/messages", _control_peer_send)
        app.router.add_route("GET", "/_sim/peers/{her_id}/received", _control_peer_received)
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

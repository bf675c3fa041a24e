"""The simulated Meldingstjener's refusals as they go out: v3 ``MshApiProblemDetails``
(``application/problem+json``), v2 ``ErrorMessage``; and what an armed fault answers in their place."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web

from gateway.testing.nhn.faults import Fault
from gateway.testing.nhn.msh_simulator import Simulator
from gateway.testing.nhn.msh_state import MshError, iso

__all__ = ["error_response", "fault_response"]

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


async def fault_response(fault: Fault, sim: Simulator) -> tuple[MshError, dict[str, str]] | None:
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

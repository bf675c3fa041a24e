"""The HTTP server the gateway is served with: aiohttp's, with the gateway's answer to a request that never
reaches the app, and the ``[limits]`` of headers and idle connections.

aiohttp's HTTP parser refuses what it cannot take - a control character in a header, a line over
``limits.max_header_bytes``, more than ``limits.max_headers`` headers, a bad method - before the app sees
the request. aiohttp then answers text/plain with the parser's message, which quotes the offending header
(a bearer token with it), and logs that message with a traceback. Here the answer is the API's JSON error
shape with a fixed message that echoes nothing the client sent, the connection still closes, and the log
line is one warning with a stable code and no header value.

This is the one module that leans on aiohttp internals: a ``RequestHandler`` subclass overriding
``handle_error`` and ``log_exception``, which a ``Server`` subclass builds, which an ``AppRunner`` subclass
makes. pyproject.toml pins aiohttp to the 3.x series, and tests/test_api_hostile.py fails if the seam moves.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.api.keys import GATEWAY
from gateway.log import get_logger

__all__ = ["app_runner"]

log = get_logger(__name__)

_TOO_LARGE = (431, "api.headers_too_large", "The request line or headers are longer, or more, than this gateway takes.")
_NOT_HTTP = (400, "api.bad_http", "The request is not HTTP/1.1 this gateway can read (request line or headers).")
_INTERNAL = (500, "api.internal_error", "Internal error; see the gateway log.")


def _answer(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """What to say about a request the parser refused (or, for a 5xx, that failed outside the app)."""
    if status >= 500 or not isinstance(exc, HttpProcessingError):
        return _INTERNAL
    if isinstance(exc, LineTooLong) or exc.message == "Too many headers received":
        return _TOO_LARGE
    return _NOT_HTTP


class _Handler(RequestHandler):
    """aiohttp's connection handler, answering its own errors in the API's shape."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # a response is partly out: nothing more can be said
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        status, event, said = _answer(status, exc)
        if status >= 500:
            log.error(event, code=event, path=request.path, exc_info=exc if exc is not None else True)
        elif isinstance(exc, BadHttpMethod):  # TLS to the plain port, or a scanner: noise, not news
            log.info(event, code=event, peer=request.remote, reason=type(exc).__name__)
        else:
            log.warning(event, code=event, peer=request.remote, reason=type(exc).__name__)
        response = web.json_response({"error": {"code": None, "event": event, "message": said}}, status=status)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's "Unhandled exception" lines (a bug, not a client): one error line, never its arguments."""
        log.error("api.server_error", code="api.server_error", exc_info=kw.get("exc_info", True))


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )


def app_runner(app: web.Application) -> web.AppRunner:
    """The runner to serve ``app`` (from :func:`gateway.api.app.create_app`) with; ``gateway serve`` and
    the tests that start real servers use it. Bodies are not decompressed (Content-Encoding is refused,
    docs/api.md); the idle timeout also bounds how long a client may take to send its headers."""
    limits = app[GATEWAY].settings.limits
    return _Runner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=limits.idle_timeout_s,
        max_line_size=limits.max_header_bytes,
        max_field_size=limits.max_header_bytes,
        max_headers=limits.max_headers,
        auto_decompress=False,
    )

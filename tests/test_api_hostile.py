"""A hostile client against a real gateway on loopback, served as ``gateway serve`` serves it.

Raw bytes over a socket where a client library would refuse to send the request: control characters in
headers, an over-long header line, 200 headers, a body that stops halfway. Every answer is a 4xx in the
API's JSON shape, no secret reaches a response or a log line, nothing is logged with a traceback, and the
gateway still answers afterwards. No timings are asserted: limits are configured tiny and outcomes checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from structlog.testing import capture_logs

from gateway.api import server as server_module
from gateway.api.app import create_app
from gateway.api.health import StoreProbe
from gateway.api.limits import LIMITER, Limiter, read_body
from gateway.api.server import app_runner
from gateway.config import LimitsSettings, TokenSettings
from gateway.errors import BadBody, ClientGone, ConfigError, ReadTimeout
from gateway.service import Gateway

from .region import fixture_bytes, settings_for

SECRET = "hitra-s3cret-token"
ADMIN_SECRET = "admin-s3cret-token"
FORESPORSEL = "dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml"


@dataclasses.dataclass
class Served:
    port: int
    limiter: Limiter

    async def exchange(
        self, data: bytes, *, then: bytes = b"", closes: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        """Send raw bytes (and, once the request is in, ``then``); read one response. ``closes``: and
        check that the server then closed the connection."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            if then:
                await self.until(lambda: self.limiter.in_flight[0] > 0)
                writer.write(then)
            await writer.drain()
            status, headers, _ = parse(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30))
            body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 30)
            if closes:
                assert await asyncio.wait_for(reader.read(), 30) == b"", "the connection stayed open"
        finally:
            writer.close()
        return status, headers, body

    async def request(self, method: str, path: str, *, headers: str = "", body: bytes = b"") -> Any:
        head = f"{method} {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{headers}"
        status, _, raw = await self.exchange(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        return status, json.loads(raw)

    async def until(self, condition: Any) -> None:
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the server never got there")


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def error_of(status: int, headers: dict[str, str], body: bytes) -> str:
    """The event of a JSON error answer, checking its shape on the way."""
    assert 400 <= status < 500, (status, body)
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert {"code", "event", "message"} <= set(error) and error["message"], error
    return str(error["event"])


@asynccontextmanager
async def serve(tmp_path: Path, **limits: Any) -> AsyncIterator[Served]:
    settings = settings_for(tmp_path, security={"protection": "none"}, limits=limits)
    tokens = (
        TokenSettings("hitra-ehr", token=SECRET, senders=("7100201",)),
        TokenSettings("ops", token=ADMIN_SECRET, senders=("*",), admin=True),
    )
    settings = dataclasses.replace(settings, api=dataclasses.replace(settings.api, tokens=tokens))
    app = create_app(Gateway(settings))
    runner = app_runner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Served(runner.addresses[0][1], app[LIMITER])
    finally:
        await runner.cleanup()


async def still_answers(served: Served) -> None:
    status, body = await served.request("GET", "/healthz")
    assert (status, body["status"]) == (200, "ok")


def post_head(token: str, length: int) -> bytes:
    """The head of a POST /v1/messages announcing a ``length``-byte body."""
    head = f"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n"
    return f"{head}Content-Length: {length}\r\n\r\n".encode()


def leaks(text: str) -> bool:
    return SECRET in text or ADMIN_SECRET in text


class TestBadHttp:
    async def test_parser_refusals_are_json_and_quiet(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """Control characters, an over-long line, 200 headers, a bad method: the documented JSON (400/431),
        a fixed message, the connection closed, one warning without the header - and no token anywhere."""
        caplog.set_level(logging.DEBUG, logger="aiohttp")
        start = "POST /v1/messages HTTP/1.1\r\nHost: gw\r\n"
        cases = {
            f"{start}Authorization: Bearer {SECRET}\x01\r\nContent-Length: 0\r\n\r\n": (400, "api.bad_http"),
            f"{start}Authorization: Bearer {SECRET}\r\nX-Long: {'a' * 10_000}\r\n\r\n": (431, "api.headers_too_large"),
            start + "".join(f"X-H{i}: {SECRET}\r\n" for i in range(200)) + "\r\n": (431, "api.headers_too_large"),
            f"GE\x01T / HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\n\r\n": (400, "api.bad_http"),
        }
        async with serve(tmp_path) as served:
            with capture_logs() as logs:
                for request, expected in cases.items():
                    status, headers, body = await served.exchange(request.encode(), closes=True)
                    assert (status, error_of(status, headers, body)) == expected, request[:60]
                    assert not leaks(body.decode())
                await still_answers(served)
        assert not leaks(json.dumps(logs, default=str)) and not leaks(caplog.text)
        assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == [
            "api.bad_http",
            "api.headers_too_large",
            "api.headers_too_large",
        ]  # the bad method is internet noise: info
        assert not any("exception" in e or "exc_info" in e for e in logs)
        assert not [r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno >= logging.WARNING]

    async def test_the_aiohttp_seam_holds(self, tmp_path: Path) -> None:
        """The runner's server builds the gateway's RequestHandler subclass, whose handle_error override
        still matches aiohttp's signature - if aiohttp moves this seam, this fails first."""
        expected = ["self", "request", "status", "exc", "message"]
        assert list(inspect.signature(RequestHandler.handle_error).parameters) == expected
        settings = settings_for(tmp_path, security={"protection": "none"})
        runner = app_runner(create_app(Gateway(settings)))
        await runner.setup()
        try:
            assert runner.server is not None
            handler = runner.server()
            assert isinstance(handler, server_module._Handler)
            assert handler.keepalive_timeout == settings.limits.idle_timeout_s
            assert handler.max_headers == settings.limits.max_headers
        finally:
            await runner.cleanup()


class TestBodies:
    async def test_transport_headers_are_validated(self, tmp_path: Path) -> None:
        """Non-UTF-8 bytes in X-From-Her-Id, a 13-digit HER-id, a bad timestamp: 400, the value not echoed."""
        fields = "X-Message-Id: m-1\r\nX-To-Her-Id: 7100201\r\nContent-Type: application/xml\r\n"
        async with serve(tmp_path) as served:
            for bad in (b"X-From-Her-Id: \xff\xfe71\r\n", b"X-From-Her-Id: 7100101710010\r\n"):
                request = b"POST /transport/http HTTP/1.1\r\nHost: gw\r\n" + fields.encode() + bad
                status, headers, body = await served.exchange(request + b"Content-Length: 3\r\n\r\nabc")
                assert error_of(status, headers, body) == "transport.bad_request"
                assert "X-From-Her-Id" in body.decode() and "710" not in body.decode()
            stamp = "X-From-Her-Id: 7100101\r\nX-Application-Timestamp: yesterday\r\n"
            status, body = await served.request("POST", "/transport/http", headers=fields + stamp, body=b"abc")
            assert status == 400 and "yesterday" not in body["error"]["message"]
            await still_answers(served)

    async def test_encodings_sizes_and_broken_framing(self, tmp_path: Path) -> None:
        """A Content-Encoding is refused (415) unread; a declared size over the cap is 413 before the body;
        no such path or method: JSON 404/405 that does not echo the path."""
        auth = f"Authorization: Bearer {SECRET}\r\n"
        async with serve(tmp_path) as served:
            gzip = auth + "Content-Encoding: gzip\r\n"
            status, body = await served.request("POST", "/v1/messages", headers=gzip, body=b"<not gzip/>")
            assert (status, body["error"]["event"]) == (415, "api.unsupported_encoding")
            head = f"POST /v1/messages HTTP/1.1\r\nHost: gw\r\n{auth}Content-Length: 50000000\r\n\r\n"
            status, _, raw = await served.exchange(head.encode())
            assert (status, json.loads(raw)["error"]["code"]) == (413, "T01")
            status, body = await served.request("GET", "/nowhere/" + SECRET)
            assert (status, body["error"]["event"]) == (404, "api.not_found") and SECRET not in body["error"]["message"]
            status, body = await served.request("DELETE", "/v1/messages", headers=auth)
            assert (status, body["error"]["event"]) == (405, "api.method_not_allowed")
            await still_answers(served)

    async def test_slow_body_is_408_and_a_vanished_client_is_no_error(self, tmp_path: Path) -> None:
        """A body that does not arrive within body_read_timeout_s: 408 JSON and the connection closed. A
        client that disconnects mid-body: one info line, no traceback, no internal error."""
        head = post_head(SECRET, 1000).decode()
        async with serve(tmp_path, body_read_timeout_s=0.2) as served:
            with capture_logs() as logs:
                status, headers, body = await served.exchange(head.encode() + b"<MsgHead>")
                assert error_of(status, headers, body) == "api.read_timeout" and status == 408
                assert headers.get("connection") == "close"
                # chunked framing broken mid-body: aiohttp's C parser leaves that body unfinished (408); its
                # Python parser reports it (400)
                chunked = head.replace("Content-Length: 1000", "Transfer-Encoding: chunked")
                status, headers, body = await served.exchange(chunked.encode(), then=b"5\r\nhello\r\nzz\r\n")
                assert error_of(status, headers, body) in ("api.read_timeout", "api.bad_body")
                _, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.write(head.encode() + b"<MsgHead>")
                await writer.drain()
                await served.until(lambda: served.limiter.in_flight[0] == 1)
                writer.close()
                await served.until(lambda: any(e["event"] == "api.client_disconnected" for e in logs))
                await still_answers(served)
        gone = next(e for e in logs if e["event"] == "api.client_disconnected")
        assert gone["log_level"] == "info" and gone["code"] == "api.client_disconnected"
        assert not [e for e in logs if e["log_level"] == "error" or "exc_info" in e]
        assert not leaks(json.dumps(logs, default=str))

    async def test_slow_headers_are_cut_off(self, tmp_path: Path) -> None:
        """Headers that never finish (slowloris) are bounded by the idle timeout: the connection is closed."""
        async with serve(tmp_path, idle_timeout_s=0.2) as served:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nX-Slow: 1\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 30) == b""  # closed, nothing said
            writer.close()
            await still_answers(served)


class TestCaps:
    async def test_per_client_cap_is_429(self, tmp_path: Path) -> None:
        """Past max_concurrent_per_client, a client gets 429 with Retry-After; others are unaffected."""
        head = post_head(SECRET, 100).decode()
        async with serve(tmp_path, max_concurrent_per_client=2, retry_after_s=3) as served:
            held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(2)]
            for _, writer in held:
                writer.write(head.encode())
            await served.until(lambda: served.limiter.held_by("client:hitra-ehr") == 2)
            status, headers, body = await served.exchange(head.encode() + b" " * 100)
            assert (status, error_of(status, headers, body)) == (429, "api.too_many_requests")
            assert headers["retry-after"] == "3"
            status, _ = await served.request("GET", "/v1/messages", headers=f"Authorization: Bearer {ADMIN_SECRET}\r\n")
            assert status == 200
            for _, writer in held:
                writer.close()
            await served.until(lambda: served.limiter.held_by("client:hitra-ehr") == 0)
            status, _ = await served.request("GET", "/v1/messages", headers=f"Authorization: Bearer {SECRET}\r\n")
            assert status == 200

    async def test_global_gate_waits_then_503(self, tmp_path: Path) -> None:
        """When the gate is full - by count or by declared body bytes - a request waits briefly, then 503."""
        limits = {"max_concurrent_requests": 2, "max_body_bytes_in_flight": 1000, "queue_wait_s": 0.1}
        admin = f"Authorization: Bearer {ADMIN_SECRET}\r\n"
        head = post_head(ADMIN_SECRET, 700).decode()
        async with serve(tmp_path, **limits) as served:
            _, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(head.encode())
            await served.until(lambda: served.limiter.in_flight == (1, 700))
            status, headers, body = await served.exchange(head.encode() + b" " * 700)  # 1400 bytes > 1000
            assert (status, json.loads(body)["error"]["event"]) == (503, "api.busy") and headers["retry-after"]
            status, _ = await served.request("GET", "/v1/messages", headers=admin)  # no body: it fits
            assert status == 200
            writer.close()
            await served.until(lambda: served.limiter.in_flight == (0, 0))
            status, _ = await served.request("POST", "/v1/messages", headers=admin, body=fixture_bytes(FORESPORSEL))
            assert status == 202

    def test_limits_must_be_positive(self) -> None:
        """A zero or negative limit is a config error, not a gateway that refuses everything."""
        with pytest.raises(ConfigError, match=r"limits\.max_concurrent_requests"):
            LimitsSettings(max_concurrent_requests=0)


class TestHealth:
    async def test_stuck_worker_threads_make_healthz_degraded(self, tmp_path: Path) -> None:
        """/healthz runs a no-op through the worker threads: when they are all stuck it says 503 degraded."""
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1)
        loop.set_default_executor(executor)
        release = threading.Event()
        async with serve(tmp_path, health_timeout_s=0.2) as served:
            await still_answers(served)
            stuck = asyncio.ensure_future(asyncio.to_thread(release.wait))
            with capture_logs() as logs:
                status, body = await served.request("GET", "/healthz")
            assert (status, body["status"], body["checks"]) == (503, "degraded", {"workers": "stuck", "store": "ok"})
            assert [e["code"] for e in logs if e["log_level"] == "warning"] == ["health.degraded"]
            release.set()
            await stuck
            await still_answers(served)
        executor.shutdown()


    async def test_the_store_is_counted_once_for_many_probes(self) -> None:
        """/healthz needs no token: many probes at once share one count of the store's tables, reused while
        fresh, so a probe flood costs the store nothing more."""
        calls = 0
        release = asyncio.Event()

        class Store:
            async def counts(self) -> dict[str, int]:
                nonlocal calls
                calls += 1
                await release.wait()
                return {"deliveries.queued": 3}

        probe = StoreProbe(fresh_s=3600)
        waiting = [asyncio.ensure_future(probe.counts(Store(), 60)) for _ in range(50)]  # type: ignore[arg-type]
        await asyncio.sleep(0)
        release.set()
        assert [await w for w in waiting] == [{"deliveries.queued": 3}] * 50
        assert await probe.counts(Store(), 60) == {"deliveries.queued": 3}  # type: ignore[arg-type]
        assert calls == 1


class TestReadBody:
    async def test_read_failures_become_refusals(self) -> None:
        """What reading a body can raise becomes a 4xx refusal - never an internal error."""

        class Stub:
            body_exists = True

            def __init__(self, exc: BaseException) -> None:
                self.exc = exc

            async def read(self) -> bytes:
                raise self.exc

        cases = {
            web.RequestPayloadError("broken"): BadBody,
            ConnectionResetError("Connection lost"): ClientGone,
            TimeoutError(): ReadTimeout,
        }
        for exc, refusal in cases.items():
            with pytest.raises(refusal) as raised:
                await read_body(Stub(exc), 1.0)  # type: ignore[arg-type]
            assert 400 <= raised.value.http_status < 500

"""The adapter registry: built-ins by name, third parties by the entry-point group gateway.adapters."""

from __future__ import annotations

import dataclasses
from importlib.metadata import EntryPoint

import pytest

import adapters.base
from adapters.base import adapter_class, known_adapters
from adapters.memory import MemoryTransport
from gateway.errors import ConfigError
from gateway.transport import Packet


class TestRegistry:
    def test_built_ins(self) -> None:
        """http, folder and memory are known by name and are Transports."""
        assert {"http", "folder", "memory"} <= set(known_adapters())
        assert adapter_class("memory") is MemoryTransport

    def test_entry_point(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An adapter registered under gateway.adapters by another package is found by its name."""
        fake = EntryPoint(name="smoke-signal", value="adapters.memory:MemoryTransport", group="gateway.adapters")
        monkeypatch.setattr(adapters.base, "entry_points", lambda group: [fake] if group == "gateway.adapters" else [])
        assert adapter_class("smoke-signal") is MemoryTransport

    def test_unknown_and_wrong(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unknown name, or an entry point that is not a Transport, is a configuration error."""
        with pytest.raises(ConfigError, match="No transport adapter named 'pigeon'"):
            adapter_class("pigeon")
        bad = EntryPoint(name="bad", value="adapters.base:Packet", group="gateway.adapters")
        monkeypatch.setattr(adapters.base, "entry_points", lambda group: [bad])
        with pytest.raises(ConfigError, match="not a Transport"):
            adapter_class("bad")


class TestPacket:
    def test_headers_round_trip(self) -> None:
        """The AMQP metadata survives the trip through HTTP-style headers."""
        packet = Packet(b"x", "m-1", "7100101", "7200101", "application/pkcs7-mime", "INNLEGGELSESRAPPORT")
        again = Packet.from_headers(b"x", packet.headers())
        assert again == packet

    def test_missing_metadata_is_refused(self) -> None:
        """A packet without its routing metadata is not guessed at."""
        with pytest.raises(ValueError, match="X-From-Her-Id"):
            Packet.from_headers(b"x", {"X-Message-Id": "1", "X-To-Her-Id": "1", "Content-Type": "x"})


class TestHttpAdapter:
    async def test_redirect_is_refused_not_followed(self) -> None:
        """A peer endpoint that redirects would turn the POST into an empty GET: refused, for good."""
        from aiohttp import web
        from aiohttp.test_utils import TestServer

        from adapters.http import HttpTransport
        from gateway.errors import PermanentDeliveryError, TransportError

        async def moved(_request: web.Request) -> web.Response:
            raise web.HTTPFound("/elsewhere")

        async def busy(_request: web.Request) -> web.Response:
            return web.json_response({"error": {"message": "busy"}}, status=503)

        app = web.Application()
        app.router.add_post("/moved", moved)
        app.router.add_post("/busy", busy)
        async with TestServer(app) as server, HttpTransport() as transport:
            packet = Packet(b"x", "m", "7100101", "7200101", "application/pkcs7-mime", "T")
            with pytest.raises(PermanentDeliveryError, match="redirects"):
                await transport.send(dataclasses.replace(packet, destination=str(server.make_url("/moved"))))
            with pytest.raises(TransportError, match="busy"):
                await transport.send(dataclasses.replace(packet, destination=str(server.make_url("/busy"))))

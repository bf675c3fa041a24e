"""The channel resolver with the real client against the double: Helsenorge.Messaging's order CPA -> CPP ->
Adresseregister, each step logged (HER-ids and cpa id, never a document, a name or a certificate), the
cache (per pair, for cache_s by the injected clock, never past a certificate's validity), and a service
that is down or answers garbage passed over without a crash."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from adapters.cppa.client import CppaClient, CppaUnavailable
from adapters.cppa.documents import Queues, parse_profile
from adapters.cppa.resolver import Channel, ChannelResolver, RegisterCertificates
from gateway.clock import ManualClock
from gateway.errors import TransportError
from gateway.security.certs import CertRef
from gateway.testing.cppa_server import REQUESTS, CppaControl, cppa_app, load_documents, running
from gateway.testing.nhn.principal import Principal

from .conftest import shared_file

CPA_ID = "49391409-e528-4919-b4a3-9ccdab72c8c1"
#: the documents: a CPA for 93238-93252, CPPs for 93238 and 93239 - none for 94867
SERVED = ("hm-Messaging-CPA_93252.xml", "hm-Registries-CPP_93238.xml", "hm-Registries-CPP_93239.xml")
NAMES = ("Digitale innbyggertjenester", "Testlege")


class Register:
    """The Adresseregister step: certificates for the HER-ids it knows, and the HER-ids asked for."""

    def __init__(self, known: dict[str, RegisterCertificates] | None = None) -> None:
        self.known = known or {}
        self.asked: list[str] = []

    async def __call__(self, her_id: str) -> RegisterCertificates | None:
        self.asked.append(her_id)
        return self.known.get(her_id)


def register_certificates() -> RegisterCertificates:
    party = parse_profile(shared_file("hm-Registries-CPP_93239.xml").read_bytes()).party
    assert party.signing is not None and party.encryption is not None
    return RegisterCertificates(
        CertRef(party.signing.cert, "Adresseregister"), CertRef(party.encryption.cert, "Adresseregister")
    )


@asynccontextmanager
async def world(
    session: aiohttp.ClientSession,
    clock: ManualClock,
    register: Register,
    *,
    control: CppaControl | None = None,
    files: tuple[str, ...] = SERVED,
    **options: Any,
) -> AsyncIterator[tuple[ChannelResolver, list[str]]]:
    app = cppa_app(load_documents([shared_file(name) for name in files]), control=control)
    async with running(app) as url:
        client = CppaClient(url, session=session, timeout_s=2)
        yield ChannelResolver(client, register, clock=clock, **options), app[REQUESTS]


def events(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [entry["event"] for entry in logs if str(entry["event"]).startswith("cppa.")]


def assert_nothing_private(logs: Sequence[Mapping[str, Any]]) -> None:
    text = json.dumps(logs, default=str)
    for name in NAMES:
        assert name not in text
    assert "MII" not in text and "X509" not in text and "<" not in text


class TestOrder:
    async def test_cpa_first(self, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        register = Register()
        with capture_logs() as logs:
            async with world(session, clock, register) as (resolver, requests):
                channel = await resolver.resolve("93238", "93252")
        assert channel.source == "cpa" and channel.cpa_id == CPA_ID
        assert (channel.my_her_id, channel.her_id) == ("93238", "93252")
        assert channel.queues == Queues("93252_async", "93252_sync", "93252_error")
        assert channel.signing is not None and channel.encryption is not None
        assert "DDFL" in channel.signing.subject and "DDFL" in channel.encryption.subject
        assert requests == ["Agreements/HerIds/93238/93252"] and register.asked == []
        # what the CPA lets 93252 send to us: its CanSend actions, whatever their case
        assert channel.agrees_to("DIALOG_INNBYGGER_EKONTAKT") and channel.agrees_to("apprec")
        assert not channel.agrees_to("EPIKRISE")
        assert events(logs) == ["cppa.agreement"]
        assert logs[0]["cpa_id"] == CPA_ID and logs[0]["my_her_id"] == "93238" and logs[0]["her_id"] == "93252"
        assert logs[0]["signing_certificate"] is True and logs[0]["encryption_certificate"] is True
        assert_nothing_private(logs)

    async def test_cpp_when_no_cpa(self, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        register = Register()
        with capture_logs() as logs:
            async with world(session, clock, register) as (resolver, requests):
                channel = await resolver.resolve("93238", "93239")
        assert channel.source == "cpp" and channel.cpa_id is None
        assert channel.sends is None and channel.agrees_to("EPIKRISE")  # no agreement: nothing to hold it to
        assert channel.queues == Queues("93239_async", "93239_sync", "93239_error")
        assert channel.encryption is not None and channel.signing is not None
        assert requests == ["Agreements/HerIds/93238/93239", "Profiles/93239"] and register.asked == []
        assert events(logs) == ["cppa.profile"]
        assert_nothing_private(logs)

    async def test_register_when_neither(self, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        certificates = register_certificates()
        register = Register({"94867": certificates})
        with capture_logs() as logs:
            async with world(session, clock, register) as (resolver, requests):
                channel = await resolver.resolve("93238", "94867")
                unknown = await resolver.resolve("93238", "1234")
        assert channel == Channel(
            "93238", "94867", None, Queues.defaults("94867"), certificates.signing, certificates.encryption, "register"
        )
        assert unknown.source == "register" and unknown.signing is None and unknown.encryption is None
        assert requests == [
            "Agreements/HerIds/93238/94867",
            "Profiles/94867",
            "Agreements/HerIds/93238/1234",
            "Profiles/1234",
        ]
        assert register.asked == ["94867", "1234"]
        assert events(logs) == ["cppa.fallback_register", "cppa.fallback_register"]
        assert logs[0]["reason"] == "no_cpa_or_cpp" and logs[0]["registered"] is True
        assert logs[1]["registered"] is False and logs[1]["encryption_certificate"] is False

    async def test_no_cppa_service(self, clock: ManualClock) -> None:
        register = Register({"93252": register_certificates()})
        with capture_logs() as logs:
            channel = await ChannelResolver(None, register, clock=clock).resolve("93238", "93252")
        assert channel.source == "register" and channel.encryption is not None
        assert logs[0]["event"] == "cppa.fallback_register" and logs[0]["reason"] == "no_cppa_service"


class TestServiceDown:
    async def test_unavailable_falls_through_and_is_asked_again_soon(
        self, session: aiohttp.ClientSession, clock: ManualClock
    ) -> None:
        control = CppaControl()
        control.fail_status, control.retry_after = 503, "30"
        register = Register({"93252": register_certificates()})
        with capture_logs() as logs:
            async with world(session, clock, register, control=control) as (resolver, requests):
                channel = await resolver.resolve("93238", "93252")
                assert channel.source == "register" and channel.cpa_id is None
                assert channel.queues == Queues.defaults("93252")
                clock.advance(10)
                await resolver.resolve("93238", "93252")  # the outage result is kept a while
                assert len(requests) == 2
                control.fail_status = None
                clock.advance(25)  # past outage_cache_s (30 s), well inside cache_s
                again = await resolver.resolve("93238", "93252")
        assert again.source == "cpa" and again.cpa_id == CPA_ID
        assert events(logs) == ["cppa.unreachable", "cppa.unreachable", "cppa.fallback_register", "cppa.agreement"]
        first, second, fallback = logs[0], logs[1], logs[2]
        assert (first["step"], second["step"]) == ("agreement", "profile")
        assert first["code"] == "cppa.unavailable" and first["retry_after_s"] == 30 and first["log_level"] == "warning"
        assert fallback["reason"] == "cppa_unavailable"
        assert_nothing_private(logs)

    async def test_unreachable_service(self, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        register = Register()
        with socket.socket() as sock:  # a port nobody listens on: bound, never listening
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
            resolver = ChannelResolver(CppaClient(url, session=session, timeout_s=2), register, clock=clock)
            with capture_logs() as logs:
                channel = await resolver.resolve("93238", "93252")
        assert channel.source == "register" and register.asked == ["93252"]
        assert events(logs) == ["cppa.unreachable", "cppa.unreachable", "cppa.fallback_register"]

    async def test_refused_access_falls_through(self, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        async def refuse(_request: web.Request) -> Principal:
            raise web.HTTPUnauthorized(text="no token")

        app = cppa_app(load_documents([shared_file(name) for name in SERVED]), authorizer=refuse)
        async with running(app) as url:
            client = CppaClient(url, session=session)
            with capture_logs() as logs:
                channel = await ChannelResolver(client, Register(), clock=clock).resolve("93238", "93252")
        assert channel.source == "register"
        assert [entry.get("code") for entry in logs[:2]] == ["cppa.refused", "cppa.refused"]

    async def test_a_hostile_cpa_is_passed_over(self, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        control = CppaControl()
        control.answers["Agreements/HerIds/93238/93239"] = (200, b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
        with capture_logs() as logs:
            async with world(session, clock, Register(), control=control) as (resolver, _):
                channel = await resolver.resolve("93238", "93239")
        assert channel.source == "cpp"
        assert events(logs) == ["cppa.document_invalid", "cppa.profile"]
        assert logs[0]["log_level"] == "error" and logs[0]["step"] == "agreement"
        assert "DOCTYPE" in logs[0]["error"]

    async def test_register_failure_reaches_the_caller(
        self, session: aiohttp.ClientSession, clock: ManualClock
    ) -> None:
        async def down(her_id: str) -> RegisterCertificates | None:
            raise TransportError("The Adresseregister did not answer.")

        async with running(cppa_app(load_documents([]))) as url:
            resolver = ChannelResolver(CppaClient(url, session=session), down, clock=clock)
            with pytest.raises(TransportError, match="Adresseregister"):
                await resolver.resolve("93238", "93252")


class TestCache:
    async def test_second_resolve_does_not_ask(self, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        async with world(session, clock, Register(), cache_s=300) as (resolver, requests):
            first = await resolver.resolve("93238", "93252")
            clock.advance(299)
            assert await resolver.resolve("93238", "93252") is first
            assert len(requests) == 1
            await resolver.resolve("93252", "93238")  # another pair: its own entry
            assert len(requests) == 2
            clock.advance(2)  # past cache_s
            again = await resolver.resolve("93238", "93252")
            assert again == first and again is not first and len(requests) == 3

    async def test_expired_certificates_force_a_lookup(
        self, session: aiohttp.ClientSession, clock: ManualClock
    ) -> None:
        """93252's certificates in the CPA are valid until 2017-08-14: a cached channel is not used after, and
        one whose certificates are out of their validity is kept for ``outage_cache_s``, not ``cache_s``."""
        clock.set(datetime(2017, 8, 13, tzinfo=UTC))
        async with world(session, clock, Register(), cache_s=10 * 365 * 86400) as (resolver, requests):
            channel = await resolver.resolve("93238", "93252")
            assert channel.certificates_valid(clock.now())
            clock.advance(86400)
            await resolver.resolve("93238", "93252")
            assert len(requests) == 1
            clock.advance(86400)  # 2017-08-15
            assert not channel.certificates_valid(clock.now())
            await resolver.resolve("93238", "93252")
            await resolver.resolve("93238", "93252")
            # what the service gives is still expired: asked again, then kept only for the short time
            assert len(requests) == 2
            clock.advance(31)  # past outage_cache_s
            await resolver.resolve("93238", "93252")
            assert len(requests) == 3

    async def test_forget(self, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        async with world(session, clock, Register()) as (resolver, requests):
            await resolver.resolve("93238", "93252")
            resolver.forget("93238", "93252")
            await resolver.resolve("93238", "93252")
            assert len(requests) == 2

    async def test_concurrent_resolves_share_one_lookup(
        self, session: aiohttp.ClientSession, clock: ManualClock
    ) -> None:
        control = CppaControl()
        control.delay_s = 0.2
        async with world(session, clock, Register(), control=control) as (resolver, requests):
            channels = await asyncio.gather(*(resolver.resolve("93238", "93252") for _ in range(5)))
            assert len({id(channel) for channel in channels}) == 1 and requests == ["Agreements/HerIds/93238/93252"]

    async def test_bounded(self, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        async with world(session, clock, Register(), max_entries=2) as (resolver, requests):
            for other in ("1", "2", "3", "1"):
                await resolver.resolve("93238", other)
            assert requests.count("Profiles/1") == 2  # "1" was the oldest, dropped for "3"

    async def test_a_result_around_an_outage_is_not_kept_long(self, clock: ManualClock) -> None:
        calls: list[str] = []

        class Down:
            async def agreement(self, my_her_id: str, counterparty_her_id: str) -> None:
                calls.append("agreement")
                raise CppaUnavailable("down")

            async def profile(self, her_id: str) -> None:
                calls.append("profile")

        resolver = ChannelResolver(Down(), Register(), clock=clock, cache_s=300, outage_cache_s=5)
        await resolver.resolve("93238", "93252")
        clock.advance(4)
        await resolver.resolve("93238", "93252")
        clock.advance(2)
        await resolver.resolve("93238", "93252")
        assert calls == ["agreement", "profile", "agreement", "profile"]


def test_channel_repr_has_no_certificate() -> None:
    certificates = register_certificates()
    channel = Channel("1", "2", None, Queues.defaults("2"), certificates.signing, certificates.encryption, "register")
    assert "MII" not in repr(channel) and "Cert" not in repr(channel) and "93239" not in repr(channel)

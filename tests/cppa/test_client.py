"""The CPPA client against the test double on a real loopback port: the two calls, what each answer becomes
(document, none, retryable failure, refused document), HelseID's DPoP token, the size cap and the timeout."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from adapters.cppa.client import CppaAccessRefused, CppaClient, CppaUnavailable
from adapters.cppa.documents import CppaDocumentError
from gateway.errors import ConfigError, GatewayError, TransportError
from gateway.testing.cppa_server import (
    CONTROL,
    REQUESTS,
    CppaControl,
    accepts_xml,
    cppa_app,
    load_documents,
    running,
)

from .conftest import shared_file
from .helseid_protected import protected


class TestCalls:
    async def test_profile_and_agreement(self, session: aiohttp.ClientSession) -> None:
        app = cppa_app()
        async with running(app) as url:
            client = CppaClient(url, session=session)
            profile = await client.profile("93238")
            assert profile is not None and profile.party.her_id == "93238"
            assert (await client.profile("92462")) is not None  # the file named 91462 holds 92462
            for pair in (("93238", "93252"), ("93252", "93238")):
                agreement = await client.agreement(*pair)
                assert agreement is not None and agreement.cpa_id == "49391409-e528-4919-b4a3-9ccdab72c8c1"
            assert (await client.agreement("8093238", "8093240")) is not None
        assert app[REQUESTS] == [
            "Profiles/93238",
            "Profiles/92462",
            "Agreements/HerIds/93238/93252",
            "Agreements/HerIds/93252/93238",
            "Agreements/HerIds/8093238/8093240",
        ]

    async def test_none(self, session: aiohttp.ClientSession) -> None:
        """404 and the service's nil placeholder are both "none"."""
        control = CppaControl()
        control.answers["Profiles/94867"] = (200, shared_file("hm-Messaging-CPP_94867.xml").read_bytes())
        control.answers["Agreements/HerIds/93238/94867"] = (200, shared_file("hm-Messaging-CPA_94867.xml").read_bytes())
        async with running(cppa_app(control=control)) as url:
            client = CppaClient(url, session=session)
            assert await client.profile("94867") is None
            assert await client.agreement("93238", "94867") is None
            assert await client.profile("1") is None
            assert await client.agreement("93238", "93239") is None  # both have CPPs, no CPA

    async def test_base_path(self, session: aiohttp.ClientSession) -> None:
        """NHN's DPoP variant lives under /v2/; a base without its trailing slash works the same."""
        async with running(cppa_app(prefix="/v2/")) as url:
            for base in (url + "v2/", url + "v2"):
                assert await CppaClient(base, session=session).profile("93239") is not None
            assert await CppaClient(url, session=session).profile("93239") is None

    async def test_the_answer_must_be_about_what_was_asked(self, session: aiohttp.ClientSession) -> None:
        control = CppaControl()
        control.answers["Profiles/93239"] = (200, shared_file("hm-Messaging-CPP_93238.xml").read_bytes())
        control.answers["Agreements/HerIds/93238/93239"] = (200, shared_file("hm-Messaging-CPA_93252.xml").read_bytes())
        async with running(cppa_app(control=control)) as url:
            client = CppaClient(url, session=session)
            with pytest.raises(CppaDocumentError, match="answered one for 93238"):
                await client.profile("93239")
            with pytest.raises(CppaDocumentError, match="CPA 49391409"):
                await client.agreement("93238", "93239")

    def test_settings_refused(self, session: aiohttp.ClientSession) -> None:
        for bad in ("ftp://cppa.example/", "cppa.test.grunndata.nhn.no", "https://u:p@cppa.example/", "https://x/?a=1"):
            with pytest.raises(ConfigError):
                CppaClient(bad, session=session)

    async def test_her_ids_checked(self, session: aiohttp.ClientSession) -> None:
        client = CppaClient("http://127.0.0.1:9/", session=session)
        for bad in ("", "12a", "../x", "1" * 13, "²"):
            with pytest.raises(ConfigError):
                await client.profile(bad)
            with pytest.raises(ConfigError):
                await client.agreement("93238", bad)


class TestHelseId:
    """NHN's DPoP variant: HelseID's token bound to the client's key, a fresh proof per call, the service's own
    DPoP nonce answered (401 use_dpop_nonce, then once more), a refused token renewed once."""

    async def test_a_dpop_bound_token_and_the_services_nonce(self, session: aiohttp.ClientSession) -> None:
        async with protected() as world:
            client = CppaClient(world.url, session=session, auth=world.client(session))
            assert await client.profile("93238") is not None  # first asked without the nonce: 401, then with it
            assert await client.agreement("93238", "93252") is not None
        assert world.app[REQUESTS] == ["Profiles/93238", "Agreements/HerIds/93238/93252"]
        assert world.helseid.tokens_issued == 1

    async def test_a_token_for_another_api_is_refused_after_one_renewal(self, session: aiohttp.ClientSession) -> None:
        async with protected(scopes=frozenset({"nhn:msh/api"})) as world:
            client = CppaClient(world.url, session=session, auth=world.client(session, scope="nhn:msh/api"))
            with pytest.raises(CppaAccessRefused) as caught:
                await client.profile("93238")
        assert caught.value.retryable and caught.value.event == "cppa.refused"
        assert "401" in caught.value.message and "nhn:cppa/access-with-dpop" in caught.value.message
        assert "eyJ" not in caught.value.message  # no token, no proof
        assert world.app[REQUESTS] == [] and world.helseid.tokens_issued == 2

    async def test_no_token_to_be_had(self, session: aiohttp.ClientSession) -> None:
        async with protected() as world:
            stranger = CppaClient(world.url, session=session, auth=world.client(session, client_id="stranger"))
            with pytest.raises(CppaAccessRefused, match="No access token for the CPPA service"):
                await stranger.profile("93238")
            without = CppaClient(world.url, session=session)
            with pytest.raises(CppaAccessRefused, match="HTTP 401"):
                await without.profile("93238")
        assert world.app[REQUESTS] == []  # refused before anything was looked up


class TestFailures:
    @pytest.mark.parametrize("status", [500, 502, 503, 429, 400, 403, 418])
    async def test_other_statuses_are_retryable(self, session: aiohttp.ClientSession, status: int) -> None:
        app = cppa_app()
        app[CONTROL].fail_status = status
        app[CONTROL].retry_after = "7"
        async with running(app) as url:
            with pytest.raises(CppaUnavailable) as caught:
                await CppaClient(url, session=session).agreement("93238", "93252")
        error = caught.value
        assert isinstance(error, TransportError) and error.retryable and not error.route_failure
        assert error.retry_after_s == 7 and f"HTTP {status}" in error.message
        assert isinstance(error, CppaAccessRefused) == (status == 403)

    async def test_unreachable(self, session: aiohttp.ClientSession) -> None:
        with socket.socket() as sock:  # a port nobody listens on: bound, never listening
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            with pytest.raises(CppaUnavailable, match="did not answer"):
                await CppaClient(f"http://127.0.0.1:{port}/", session=session).profile("93238")

    @pytest.mark.timeout(20)
    async def test_timeout(self, session: aiohttp.ClientSession) -> None:
        app = cppa_app()
        app[CONTROL].delay_s = 1.5
        async with running(app) as url:
            with pytest.raises(CppaUnavailable, match="TimeoutError"):
                await CppaClient(url, session=session, timeout_s=0.2).profile("93238")

    async def test_over_the_size_cap(self, session: aiohttp.ClientSession) -> None:
        app = cppa_app()
        app[CONTROL].answers["Profiles/93238"] = (200, b"<" + b"x" * (5 * 1024 * 1024))
        async with running(app) as url:
            with pytest.raises(CppaDocumentError, match="over"):
                await CppaClient(url, session=session).profile("93238")
            with pytest.raises(CppaDocumentError, match="over 1000"):
                await CppaClient(url, session=session, max_bytes=1000).profile("93239")

    @pytest.mark.timeout(30)
    async def test_hostile_documents_over_http(self, session: aiohttp.ClientSession) -> None:
        bomb = b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><x>&b;</x>'
        app = cppa_app()
        app[CONTROL].answers.update(
            {
                "Profiles/1": (200, bomb),
                "Profiles/2": (200, b"not xml at all"),
                "Profiles/3": (
                    200,
                    shared_file("hm-Messaging-CPP_93238.xml").read_bytes().replace(b"ebxml-cppa", b"x"),
                ),
            }
        )
        async with running(app) as url:
            client = CppaClient(url, session=session)
            for her_id in ("1", "2", "3"):
                with pytest.raises(CppaDocumentError) as caught:
                    await client.profile(her_id)
                assert isinstance(caught.value, GatewayError) and not caught.value.retryable


class TestDouble:
    async def test_accept_must_allow_xml(self, session: aiohttp.ClientSession) -> None:
        async with running(cppa_app()) as url:
            for accept, status in (
                ("application/json", 406),
                ("application/xml;q=0", 406),
                ("text/html, application/xml;q=0.5", 200),
                ("*/*", 200),
            ):
                async with session.get(url + "Profiles/93238", headers={"Accept": accept}) as resp:
                    assert resp.status == status, accept
        assert not accepts_xml("application/json") and accepts_xml(None) and accepts_xml("application/*")

    def test_documents_indexed_by_their_own_her_ids(self) -> None:
        documents = load_documents()
        assert set(documents.profiles) == {"92462", "93238", "93239", "93252"}
        assert set(documents.agreements) == {
            frozenset({"93238", "93252"}),
            frozenset({"93238", "93253"}),
            frozenset({"8093238", "8093240"}),
        }
        assert documents.files["Profiles/92462"].name == "hm-Messaging-CPP_91462.xml"
        chosen = load_documents([shared_file("hm-Registries-CPA_Rest_93252.xml")])
        assert b"enc_cert_93238" in chosen.agreements[frozenset({"93238", "93252"})] and not chosen.profiles

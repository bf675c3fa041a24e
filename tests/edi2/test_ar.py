"""The Adresseregister client against its double, on loopback: NHN's own response files read right, the
E21 reasons, the cache, and what each kind of failure becomes - a hostile answer included."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from lxml import etree

from adapters.edi2.ar import ACTION, AddressRegister, AddressRegisterError, CommunicationParty, refusal
from gateway.clock import ManualClock
from gateway.errors import ConfigError, ForbiddenMarkup, TransportError, UnknownReceiver
from gateway.registry import Register
from gateway.testing.nhn.ar import (
    AR_PATH,
    REQUESTS,
    SyntheticParty,
    add_party,
    ar_app,
    ar_dir,
    fixture_parties,
    region_parties,
)

from ..conftest import require_shared

USER, PASSWORD = "8142987_Test", "Hemmelig-passord-42"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
HITS = web.AppKey("hits", list[bytes])
Handler = Callable[[web.Request], Awaitable[web.Response]]


@pytest.fixture(autouse=True)
def _shared() -> None:
    require_shared()
    if not ar_dir().is_dir():  # the same rule for the NHN files: skipped only outside CI
        if os.environ.get("CI"):
            pytest.fail(f"{ar_dir()} is missing, and CI must run the Adresseregister tests")
        pytest.skip("../shared/standards/nhn/ar is not beside this checkout")


@pytest.fixture(name="session")
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(name="nhn")
async def _nhn(register: Register) -> AsyncIterator[TestServer]:
    """The double with NHN's files and the SiO region's remote parties."""
    async with TestServer(ar_app(username=USER, password=PASSWORD, synthetic=region_parties(register))) as server:
        yield server


def client(
    server: TestServer,
    session: aiohttp.ClientSession,
    *,
    clock: Callable[[], float] = time.monotonic,
    timeout_s: float = 10,
) -> AddressRegister:
    url = str(server.make_url(AR_PATH))
    return AddressRegister(url, USER, PASSWORD, session=session, clock=clock, timeout_s=timeout_s)


@asynccontextmanager
async def answering(status: int, body: bytes, content_type: str = "application/soap+xml") -> AsyncIterator[TestServer]:
    """A server that answers every request the same way and keeps the requests it had."""

    async def handle(request: web.Request) -> web.Response:
        request.app[HITS].append(await request.read())
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app[HITS] = []
    app.router.add_post(AR_PATH, handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


def fixture(name: str) -> bytes:
    return (ar_dir() / f"ks-get-communication-party-details-{name}-response.xml").read_bytes()


class TestNhnFiles:
    @pytest.mark.parametrize(
        ("her_id", "kind", "name", "parent", "valid", "edi"),
        [
            ("8094866", "Service", "Meldingsvalidering", ("112374", "Norsk Helsenett SF"), True, True),
            ("8142987", "Organization", "KS-DIGITALE FELLESTJENESTER AS", (None, None), False, True),
            ("115522", "Person", "Anne-Marie Bach", ("84556", "Tysnes Helsesenter"), True, True),
            ("12345", "Organization", "ET LEGEKONTOR", (None, None), False, False),
            ("55555", "Organization", "ET LEGEKONTOR", ("987654", "Overordnet Organisasjon"), False, False),
        ],
        ids=["service", "organisation", "person", "no-parent", "with-parent"],
    )
    async def test_each_file_read_right(
        self,
        nhn: TestServer,
        session: aiohttp.ClientSession,
        her_id: str,
        kind: str,
        name: str,
        parent: tuple[str | None, str | None],
        valid: bool,
        edi: bool,
    ) -> None:
        """Kind, name, parent (ParentHerId -1 is none), flags and addresses come from the party itself,
        never from the services or organisations nested in its answer."""
        party = await client(nhn, session).lookup(her_id)
        assert party is not None
        assert (party.her_id, party.kind, party.name) == (her_id, kind, name)
        assert (party.parent_her_id, party.parent_name) == parent
        assert party.active and party.is_valid_communication_party is valid
        assert bool(party.addresses("E_EDI")) is edi
        assert all(address == address.strip() and "\n" not in address for _, address in party.electronic_addresses)

    async def test_details(self, nhn: TestServer, session: aiohttp.ClientSession) -> None:
        """The addresses in the register's order, the E_DS LDAP URL unwrapped, the organisation number."""
        ar = client(nhn, session)
        service = await ar.lookup("8094866")
        organisation = await ar.lookup("8142987")
        assert service is not None and organisation is not None
        assert service.addresses("E_EDI") == ("meldingsvalidator@samsvar.nhn.no",)
        assert service.addresses("E_DS")[0].startswith("ldap://ldap.buypass.no/dc=Buypass")
        assert [code for code, _ in service.electronic_addresses][:3] == ["E_EDI", "E_DS", "E_FAX"]
        assert len(organisation.electronic_addresses) == 2  # not the six of its two services
        assert organisation.organization_number == "931796003"

    def test_default_parties_are_the_files(self) -> None:
        """The double answers for the HER-id of every ks-*.xml that describes a party."""
        assert set(fixture_parties()) == {"8094866", "8142987", "115522", "12345", "55555"}


class TestRefusal:
    async def test_not_found(self, nhn: TestServer, session: aiohttp.ClientSession) -> None:
        """NHN's "InvalidHerIdSupplied" fault (sent with HTTP 500, as WCF does) is an answer: not there."""
        assert await client(nhn, session).lookup("999") is None
        assert refusal("999", None) == "HER-id 999 is not in the Adresseregister"

    async def test_not_a_valid_party_and_not_active(self, nhn: TestServer, session: aiohttp.ClientSession) -> None:
        ar = client(nhn, session)
        add_party(nhn.app, SyntheticParty("7299901", "Nedlagt avdeling", "7200000", "St. Olavs", active=False))
        organisation, closed, service = [await ar.lookup(h) for h in ("8142987", "7299901", "8094866")]
        assert "HER-id 8142987 is not a valid communication party" in (refusal("8142987", organisation) or "")
        assert refusal("7299901", closed) == "HER-id 7299901 is not active in the Adresseregister"
        assert refusal("8094866", service) is None

    async def test_sio_parties(self, nhn: TestServer, session: aiohttp.ClientSession) -> None:
        """St. Olavs' departments and lab answer in the service file's shape, under their organisation."""
        ar = client(nhn, session)
        parties = {h: await ar.lookup(h) for h in ("7200101", "7200102", "7200201")}
        medisin = parties["7200101"]
        assert medisin is not None
        assert (medisin.kind, medisin.name) == ("Service", "Orkdal sjukehus, medisinsk avdeling")
        assert (medisin.parent_her_id, medisin.parent_name) == ("7200000", "St. Olavs hospital HF")
        assert all(p is not None and refusal(h, p) is None for h, p in parties.items())
        lab = parties["7200201"]
        assert lab is not None and lab.name == "Avdeling for medisinsk biokjemi"

    @pytest.mark.parametrize("her_id", ["", "12a", "1234567890123", " 7200101", "７２００１０１", "-1"])
    async def test_no_request_for_what_is_not_a_her_id(
        self, nhn: TestServer, session: aiohttp.ClientSession, her_id: str
    ) -> None:
        with pytest.raises(UnknownReceiver, match="not a HER-id"):
            await client(nhn, session).lookup(her_id)
        assert nhn.app[REQUESTS] == []


class TestWire:
    async def test_request_as_the_ks_client_sends_it(self, session: aiohttp.ClientSession) -> None:
        """SOAP 1.2 with the action in the content type, Basic auth and the WS-Addressing headers."""
        seen: list[tuple[dict[str, str], bytes]] = []

        async def handle(request: web.Request) -> web.Response:
            seen.append((dict(request.headers), await request.read()))
            return web.Response(body=fixture("service"), headers={"Content-Type": "application/soap+xml"})

        app = web.Application()
        app.router.add_post(AR_PATH, handle)
        async with TestServer(app, host="127.0.0.1") as server:
            url = str(server.make_url(AR_PATH))
            await AddressRegister(url, USER, PASSWORD, session=session).lookup("8094866")
        headers, body = seen[0]
        assert headers["Content-Type"] == f'application/soap+xml; charset=utf-8; action="{ACTION}"'
        assert headers["Authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        envelope = etree.fromstring(body)
        assert envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}Action") == ACTION
        assert envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}To") == url
        assert (envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}MessageID") or "").startswith("urn:uuid:")
        assert envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}ReplyTo/{{{WSA}}}Address") == f"{WSA}/anonymous"
        cp = "http://register.nhn.no/CommunicationParty"
        assert envelope.findtext(f"{{{SOAP}}}Body/{{{cp}}}GetCommunicationPartyDetails/{{{cp}}}herId") == "8094866"

    async def test_the_double_refuses_what_nhn_refuses(self, nhn: TestServer, session: aiohttp.ClientSession) -> None:
        """No credentials: 401 with a Basic challenge; not SOAP 1.2: 415; no WS-Addressing Action: a fault."""
        url = nhn.make_url(AR_PATH)
        async with session.post(url, data=b"<x/>") as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
        auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        async with session.post(url, data=b"<x/>", headers={"Authorization": auth, "Content-Type": "text/xml"}) as resp:
            assert resp.status == 415
        bare = fixture("service")  # a SOAP 1.2 envelope without WS-Addressing headers
        async with session.post(
            url, data=bare, headers={"Authorization": auth, "Content-Type": "application/soap+xml"}
        ) as resp:
            assert resp.status == 500 and b"ActionNotSupported" in await resp.read()
        assert nhn.app[REQUESTS] == []


class TestCredentials:
    async def test_refused_credentials(self, nhn: TestServer, session: aiohttp.ClientSession) -> None:
        """A 401 is an operator's problem, said plainly, without the credentials."""
        ar = AddressRegister(str(nhn.make_url(AR_PATH)), USER, "wrong-" + PASSWORD, session=session)
        with pytest.raises(AddressRegisterError, match=r"refused this gateway's username and password \(HTTP 401\)"):
            await ar.lookup("8094866")
        with pytest.raises(AddressRegisterError) as info:
            await ar.lookup("8094866")  # a failure is not cached: asked again, refused again
        assert PASSWORD not in str(info.value) and USER not in str(info.value)
        assert not info.value.retryable and nhn.app[REQUESTS] == []

    def test_never_shown(self, session: aiohttp.ClientSession) -> None:
        ar = AddressRegister("https://ws-web.test.nhn.no/v1/Ar", USER, PASSWORD, session=session)
        assert PASSWORD not in repr(ar) and USER not in repr(ar)
        with pytest.raises(ConfigError) as info:
            AddressRegister(f"https://{USER}:{PASSWORD}@ws.nhn.no/v1/Ar", USER, PASSWORD, session=session)
        assert PASSWORD not in str(info.value)


class TestCache:
    async def test_hit_within_ttl_then_asked_again(self, nhn: TestServer, session: aiohttp.ClientSession) -> None:
        clock = ManualClock(1000.0)
        ar = client(nhn, session, clock=clock.now)  # ttl_s 3600, negative_ttl_s 300: the defaults
        first = await ar.lookup("8094866")
        clock.advance(3599)
        assert await ar.lookup("8094866") == first
        assert len(nhn.app[REQUESTS]) == 1
        clock.advance(2)
        assert await ar.lookup("8094866") == first
        assert len(nhn.app[REQUESTS]) == 2

    async def test_not_found_kept_for_its_own_ttl(self, nhn: TestServer, session: aiohttp.ClientSession) -> None:
        """ "Not found" is kept 5 minutes, a party an hour: one party being registered shows up soon."""
        clock = ManualClock(1000.0)
        ar = client(nhn, session, clock=clock.now)
        assert await ar.lookup("999") is None and await ar.lookup("8094866") is not None
        clock.advance(299)
        assert await ar.lookup("999") is None and await ar.lookup("8094866") is not None
        assert nhn.app[REQUESTS] == ["999", "8094866"]
        clock.advance(2)
        assert await ar.lookup("999") is None and await ar.lookup("8094866") is not None
        assert nhn.app[REQUESTS] == ["999", "8094866", "999"]

    async def test_concurrent_lookups_share_one_request(self, nhn: TestServer, session: aiohttp.ClientSession) -> None:
        ar = client(nhn, session)
        answers = await asyncio.gather(*(ar.lookup(h) for h in ["7200101"] * 20 + ["999"] * 5))
        assert nhn.app[REQUESTS] == ["7200101", "999"]
        assert len({a for a in answers if a is not None}) == 1 and answers[-5:] == [None] * 5

    async def test_a_shared_failure_is_not_kept(self, session: aiohttp.ClientSession) -> None:
        async with answering(503, b"Service Unavailable", "text/plain") as server:
            ar = client(server, session)
            results = await asyncio.gather(*(ar.lookup("8094866") for _ in range(5)), return_exceptions=True)
            assert all(isinstance(r, TransportError) for r in results)
            with pytest.raises(TransportError):
                await ar.lookup("8094866")
            assert len(server.app[HITS]) == 2


def fault(code: str, error_code: str) -> bytes:
    return (
        fixture("not-found")
        .replace(b"s:Sender", f"s:{code}".encode())
        .replace(b"InvalidHerIdSupplied", error_code.encode())
    )


class TestFailures:
    @pytest.mark.parametrize(
        ("status", "body", "content_type"),
        [
            (503, b"Service Unavailable", "text/plain"),
            (502, b"<!DOCTYPE html><html><body>Bad gateway</body></html>", "text/html"),
            (500, fault("Receiver", "InternalError"), "application/soap+xml"),
            (429, b"", "text/plain"),
        ],
        ids=["503", "proxy-page", "receiver-fault", "429"],
    )
    async def test_retryable(self, session: aiohttp.ClientSession, status: int, body: bytes, content_type: str) -> None:
        """The register's own trouble is worth trying again - even an HTML error page with a DOCTYPE."""
        async with answering(status, body, content_type) as server:
            with pytest.raises(TransportError) as info:
                await client(server, session).lookup("8094866")
        assert info.value.retryable and PASSWORD not in str(info.value)

    async def test_connection_refused(self, session: aiohttp.ClientSession) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ar = AddressRegister(f"http://127.0.0.1:{port}{AR_PATH}", USER, PASSWORD, session=session)
        with pytest.raises(TransportError, match="did not answer"):
            await ar.lookup("8094866")

    async def test_timeout(self, session: aiohttp.ClientSession) -> None:
        async def stall(request: web.Request) -> web.Response:
            await asyncio.Event().wait()
            raise AssertionError("never answered")

        app = web.Application()
        app.router.add_post(AR_PATH, stall)
        async with TestServer(app, host="127.0.0.1") as server:
            with pytest.raises(TransportError, match="TimeoutError"):
                await client(server, session, timeout_s=0.2).lookup("8094866")

    async def test_other_faults_name_their_code(self, nhn: TestServer, session: aiohttp.ClientSession) -> None:
        """A HER-id over xs:int's range is refused by NHN's deserializer: a fault, named, not retried."""
        with pytest.raises(AddressRegisterError, match="SOAP fault Sender/a:DeserializationFailed") as info:
            await client(nhn, session).lookup("999999999999")
        assert info.value.fault_code == "Sender" and not info.value.retryable
        async with answering(500, fault("Sender", "AccessDenied")) as server:
            with pytest.raises(AddressRegisterError, match="SOAP fault Sender/AccessDenied") as info:
                await client(server, session).lookup("8094866")
        assert info.value.error_code == "AccessDenied"

    async def test_answer_for_another_party(self, session: aiohttp.ClientSession) -> None:
        service = Path("ks-get-communication-party-details-service-response.xml")  # relative to the ar folder
        app = ar_app({"4242": service}, username=USER, password=PASSWORD)
        async with TestServer(app, host="127.0.0.1") as server:
            with pytest.raises(AddressRegisterError, match="answered for 8094866"):
                await client(server, session).lookup("4242")


class TestHostileAnswer:
    @pytest.mark.parametrize("kind", ["external-entity", "internal-entity", "undeclared-entity"])
    async def test_refused_by_the_parser_not_read(
        self, tmp_path: Path, session: aiohttp.ClientSession, kind: str
    ) -> None:
        """A DOCTYPE or an entity in the register's answer is refused before anything is read from it:
        the file it points at stays unread and no party comes of it."""
        secret = tmp_path / "secret.txt"
        secret.write_text("TOP-SECRET-CONTENT")
        doctypes = {
            "external-entity": f'<!DOCTYPE s:Envelope [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>',
            "internal-entity": '<!DOCTYPE s:Envelope [<!ENTITY xxe "boom"><!ENTITY b "&xxe;&xxe;&xxe;">]>',
            "undeclared-entity": "",
        }
        body = doctypes[kind].encode() + fixture("service").replace(
            b"<Name>Meldingsvalidering</Name>", b"<Name>&xxe;</Name>"
        )
        async with answering(200, body) as server:
            with pytest.raises(AddressRegisterError, match="refused unread") as info:
                await client(server, session).lookup("8094866")
        assert isinstance(info.value.__cause__, ForbiddenMarkup)
        assert "TOP-SECRET" not in str(info.value)


def test_party_is_frozen() -> None:
    party = CommunicationParty("1", "x", "Service", True, True, None, None)
    with pytest.raises(AttributeError):
        party.name = "y"  # type: ignore[misc]

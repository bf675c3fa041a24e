"""The simulated Meldingstjener on loopback for the ``test_msh_sim_*`` tests: the parties, the fixtures'
documents, a header-driven authorizer, and :class:`Api` - a client that speaks either version.

Real aiohttp servers on loopback; the peers' time is a ManualClock moved by ``sim.advance()``, so nothing
here waits on the wall clock. Each test module makes its own ``api`` fixture from :func:`configured_api`
(a fixture imported from here would read to ruff as an unused import shadowed by the test's argument).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree

from gateway.clock import ManualClock
from gateway.testing.nhn.msh import Simulator, create_msh_app
from gateway.testing.nhn.principal import Authorizer, Principal
from tests.conftest import FIXTURES

HITRA, GP, SKAUN, LEGEVAKT, FROYA, MELDAL = "7100201", "7102001", "7100701", "7103001", "7100101", "7100801"
ORKDAL_MED, LAB = "7200101", "7200201"
OURS = (HITRA, GP, SKAUN, LEGEVAKT, FROYA, MELDAL)
EPIKRISE_FILE = FIXTURES / "epikrise-1.2" / "epikrise-med-kopi-hjemmetjeneste.xml"
DIALOG = (FIXTURES / "dialogmelding-1.1" / "helsefaglig-dialog-foresporsel.xml").read_bytes()  # Hitra -> GP
INNLEGGELSE = (FIXTURES / "plo-innleggelsesrapport-1.6" / "innleggelsesrapport-kopi-legevakt.xml").read_bytes()
EPIKRISE = EPIKRISE_FILE.read_bytes()  # Orkdal -> GP, copy Frøya
LATIN1 = (FIXTURES / "plo-orientering-tjenestetilbud-1.6" / "orientering-om-tjenestetilbud-latin1.xml").read_bytes()
APPREC_NS = "http://www.kith.no/xmlstds/apprec/2012-02-15"
START = 1_800_000_000.0


def header_authorizer() -> Authorizer:
    """``X-Sim-Principal: client[;her,her]`` (no HER-ids: all); none is 401 - these tests are not about tokens."""

    async def authorize(request: web.Request) -> Principal:
        value = request.headers.get("X-Sim-Principal", "")
        if not value:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "DPoP"})
        client, _, her_ids = value.partition(";")
        return Principal(client, frozenset(h for h in her_ids.split(",") if h) or None)

    return authorize


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any


@dataclass
class Api:
    client: TestClient  # type: ignore[type-arg]
    sim: Simulator
    principal: str = f"sio-gateway;{','.join(OURS)}"
    version: str = "3"

    def headers(self, principal: str | None = None, **extra: str) -> dict[str, str]:
        return {
            "api-version": self.version,
            "nhn-source-system": "SiO gateway test, v1",
            "X-Sim-Principal": self.principal if principal is None else principal,
            **extra,
        }

    async def call(
        self, method: str, path: str, *, principal: str | None = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> Answer:
        async with self.client.request(method, path, headers=headers or self.headers(principal), **kw) as resp:
            text = await resp.text()
            body = json.loads(text) if text and "json" in (resp.content_type or "") else text
            return Answer(resp.status, body, resp.headers)

    async def configure(
        self, her_ids: tuple[str, ...], *, locked: bool = False, principal: str | None = None
    ) -> Answer:
        configs = [{"herId": int(h), "receiveNotificationChannel": "Api", "clientLocked": locked} for h in her_ids]
        return await self.call("PUT", "/mshconfigurations", json={"configurations": configs}, principal=principal)

    async def send(
        self, document: bytes, sender: str, receivers: list[str], *, principal: str | None = None, **over: Any
    ) -> Answer:
        body = {
            "businessDocument": base64.b64encode(document).decode(),
            "senderHerId": int(sender),
            "receiverHerIds": [int(r) for r in receivers],
            "contentType": "application/xml",
            "contentTransferEncoding": "base64",
            "messageTypeIdentificator": "DIALOG_HELSEFAGLIG",
            "applicationName": "SiO gateway",
            "applicationVersion": "0.1",
            **over,
        }
        return await self.call("POST", "/messages", json=body, principal=principal)

    async def notifications(
        self, her_ids: tuple[str, ...], offset: int, count: int | None = None
    ) -> list[dict[str, Any]]:
        params = [("HerIds", h) for h in her_ids] + [("Offset", str(offset))]
        if count is not None:
            params.append(("NotificationsToFetch", str(count)))
        answer = await self.call("GET", "/notifications", params=params)
        assert answer.status == 200, answer.body
        notes: list[dict[str, Any]] = answer.body["notifications"]
        return notes

    async def status(self, message_id: str) -> list[dict[str, Any]]:
        answer = await self.call("GET", f"/messages/{message_id}/status")
        assert answer.status == 200, answer.body
        states: list[dict[str, Any]] = answer.body["statusList"]
        return states


def make_sim(**kw: Any) -> Simulator:
    sim = Simulator(clock=ManualClock(START), heartbeat=0.2, **kw)
    sim.add_peer(ORKDAL_MED, "Orkdal sjukehus, medisinsk avdeling")
    sim.add_peer(LAB, "St. Olavs, medisinsk biokjemi")
    return sim


@asynccontextmanager
async def configured_api() -> AsyncIterator[Api]:
    """A fresh simulator (:func:`make_sim`) served on loopback, every one of :data:`OURS` configured."""
    sim = make_sim()
    async with TestClient(TestServer(create_msh_app(sim, header_authorizer()))) as client:
        api = Api(client, sim)
        assert (await api.configure(OURS)).status == 204
        yield api


def problem(answer: Answer, status: int) -> dict[str, Any]:
    """The answer is MshApiProblemDetails with this status; returns it."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = answer.body
    assert set(body) == {"type", "title", "status", "detail", "instance", "errorCode", "requestId",
                         "validationErrors", "stackTrace", "timestamp"}  # fmt: skip
    assert body["status"] == status and body["stackTrace"] is None and body["requestId"]
    return body


async def apprec_root(api: Api, message_id: str) -> Any:
    document = (await api.call("GET", f"/messages/{message_id}/business-document")).body
    return etree.fromstring(base64.b64decode(document["businessDocument"]))

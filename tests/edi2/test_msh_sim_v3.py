"""The simulated Meldingstjener, API version 3: every check a real server makes, the notification log, SSE,
the scripted EDI peers, each fault knob and the runnable configuration.

Real aiohttp servers on loopback; the peers' time is a ManualClock moved by ``sim.advance()``, so nothing
here waits on the wall clock. Assertions are on outcomes (statuses, bodies, states), never on timings.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree

from gateway.cli import build_parser
from gateway.cli.sim import build, load_sim_config
from gateway.clock import ManualClock
from gateway.testing.nhn.msh import Simulator, create_msh_app
from gateway.testing.nhn.msh_state import AppRecErrorInfo
from gateway.testing.nhn.peers import PeerScript
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


@pytest.fixture(name="api")
async def _api() -> AsyncIterator[Api]:
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


# --- what every call must carry --------------------------------------------------------------------------


class TestEveryCall:
    async def test_api_version_and_source_system_are_required(self, api: Api) -> None:
        without_version = {k: v for k, v in api.headers().items() if k != "api-version"}
        assert "API version" in problem(await api.call("GET", "/ping", headers=without_version), 400)["detail"]
        for unsupported in ("1", "2-vNext", "4"):
            detail = problem(await api.call("GET", "/ping", headers=api.headers(**{"api-version": unsupported})), 400)
            assert unsupported in detail["detail"]
        no_source = {k: v for k, v in api.headers().items() if k != "nhn-source-system"}
        body = problem(await api.call("GET", "/ping", headers=no_source), 400)
        assert body["errorCode"] == 1000 and "nhn-source-system" in body["validationErrors"][0]

    async def test_routes_methods_and_credentials(self, api: Api) -> None:
        assert (await api.call("GET", "/ping")).body["response"] == "Pong"
        assert (await api.call("GET", "/PING")).status == 200  # ASP.NET routes ignore case
        problem(await api.call("GET", "/nothing-here"), 404)
        problem(await api.call("DELETE", "/messages"), 405)
        assert (await api.call("GET", "/ping", principal="")).status == 401  # the authorizer's own answer

    async def test_unknown_json_fields_are_tolerated_and_json_is_required(self, api: Api) -> None:
        assert (await api.send(DIALOG, HITRA, [GP], somethingNew={"x": 1})).status == 202
        answer = await api.call("PUT", "/mshconfigurations", data=b"herId=1", headers=api.headers(**{
            "Content-Type": "application/x-www-form-urlencoded"}))  # fmt: skip
        problem(answer, 415)
        problem(await api.call("PUT", "/mshconfigurations", data=b"{not json", headers=api.headers(**{
            "Content-Type": "application/json"})), 400)  # fmt: skip

    async def test_a_body_over_35_mb_is_refused_from_its_content_length(self, api: Api) -> None:
        """The limit is checked before a byte of the body is read: the request head alone is answered."""
        server = api.client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        head = (
            "POST /messages HTTP/1.1\r\nHost: sim\r\napi-version: 3\r\nnhn-source-system: raw\r\n"
            f"X-Sim-Principal: {api.principal}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {35 * 2**20 + 1}\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        status_line = await reader.readline()
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = json.loads(await reader.readexactly(int(headers["content-length"])))
        writer.close()
        assert status_line.split()[1] == b"400"
        assert "35 MB" in body["detail"] and "36700160" in body["detail"]

    async def test_a_streamed_body_is_cut_at_the_limit(self) -> None:
        sim = make_sim(max_request_bytes=4096)
        async with TestClient(TestServer(create_msh_app(sim, header_authorizer()))) as client:
            api = Api(client, sim)

            async def chunks() -> AsyncIterator[bytes]:
                yield b'{"configurations": ['
                for _ in range(100):
                    yield b'{"herId": 7100201, "receiveNotificationChannel": "Api"},'
                yield b"]}"

            answer = await api.call("PUT", "/mshconfigurations", data=chunks(), headers=api.headers(**{
                "Content-Type": "application/json"}))  # fmt: skip
            assert "4096 bytes" in problem(answer, 400)["detail"]


# --- configurations, authorisation -----------------------------------------------------------------------


class TestConfigurations:
    async def test_every_her_id_must_be_configured_before_use(self) -> None:
        """NHN rejects requests for an unconfigured HER-id; the simulator says 400 (a domain error)."""
        sim = make_sim()
        async with TestClient(TestServer(create_msh_app(sim, header_authorizer()))) as client:
            api = Api(client, sim)
            assert "7100201" in problem(await api.send(DIALOG, HITRA, [GP]), 400)["detail"]
            params = [("HerIds", GP), ("Offset", "0")]
            problem(await api.call("GET", "/notifications", params=params), 400)
            assert (await api.configure((HITRA, GP))).status == 204
            assert (await api.send(DIALOG, HITRA, [GP])).status == 202

    async def test_a_locked_her_id_is_423_for_every_other_client(self, api: Api) -> None:
        other = f"other-client;{HITRA},{GP}"
        assert (await api.configure((HITRA, GP), locked=True)).status == 204
        sent = await api.send(DIALOG, HITRA, [GP])
        assert sent.status == 202
        message = f"/messages/{sent.body['id']}"
        assert "7100201" in problem(await api.send(DIALOG, HITRA, [GP], principal=other), 423)["detail"]
        problem(await api.configure((HITRA,), principal=other), 423)
        problem(await api.call("PUT", f"{message}/downloaded", json={"receiverHerId": int(GP)}, principal=other), 423)
        apprec = {"appRecSenderHerId": int(GP), "appRecStatus": "Ok"}
        problem(await api.call("POST", f"{message}/apprec", json=apprec, principal=other), 423)
        params = [("HerIds", GP), ("Offset", "0")]
        problem(await api.call("GET", "/notifications", params=params, principal=other), 423)
        problem(await api.call("DELETE", "/mshconfigurations", params=[("HerIds", GP)], principal=other), 423)
        # the owner keeps working, and releases the lock declaratively; then the other client may act
        assert (await api.call("PUT", f"{message}/downloaded", json={"receiverHerId": int(GP)})).status == 204
        assert (await api.configure((HITRA, GP), locked=False)).status == 204
        assert (await api.send(DIALOG, HITRA, [GP], principal=other)).status == 202

    async def test_configuration_fields_are_checked(self, api: Api) -> None:
        bad = {"configurations": [
            {"herId": 7100201, "receiveNotificationChannel": "Kafka"},
            {"herId": "7100201", "receiveNotificationChannel": "Api"},
            {"receiveNotificationChannel": "Api", "clientLocked": "yes"},
        ]}  # fmt: skip
        errors = problem(await api.call("PUT", "/mshconfigurations", json=bad), 400)["validationErrors"]
        assert any("Kafka" in e for e in errors) and any("HerId" in e for e in errors)
        assert any("ClientLocked" in e for e in errors)
        problem(await api.call("PUT", "/mshconfigurations", json={"configurations": []}), 400)

    async def test_delete_releases_a_configuration(self, api: Api) -> None:
        assert (await api.call("DELETE", "/mshconfigurations", params=[("HerIds", FROYA)])).status == 204
        problem(await api.call("DELETE", "/mshconfigurations", params=[("HerIds", FROYA)]), 404)

    async def test_her_ids_the_principal_may_not_act_for_are_403(self, api: Api) -> None:
        narrow = f"sio-gateway;{HITRA}"
        sent = await api.send(DIALOG, HITRA, [GP])
        message = f"/messages/{sent.body['id']}"
        assert problem(await api.send(DIALOG, GP, [HITRA], principal=narrow), 403)["detail"] == (
            "Not authorized for HerId(s): 7102001"
        )
        params = [("HerIds", HITRA), ("HerIds", GP), ("Offset", "0")]
        problem(await api.call("GET", "/notifications", params=params, principal=narrow), 403)
        problem(await api.configure((GP,), principal=narrow), 403)
        problem(await api.call("PUT", f"{message}/downloaded", json={"receiverHerId": int(GP)}, principal=narrow), 403)
        apprec = {"appRecSenderHerId": int(GP), "appRecStatus": "Ok"}
        problem(await api.call("POST", f"{message}/apprec", json=apprec, principal=narrow), 403)
        stranger = f"sio-gateway;{FROYA}"
        for path in (message, f"{message}/status", f"{message}/business-document"):
            problem(await api.call("GET", path, principal=stranger), 403)


# --- messages ---------------------------------------------------------------------------------------------


class TestMessages:
    async def test_post_message_is_validated_as_nhn_validates_it(self, api: Api) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"businessDocument": "not base64!"}, "base64"),
            ({"businessDocument": base64.b64encode(LATIN1).decode()}, "UTF-8"),
            ({"businessDocument": base64.b64encode(b'<?xml version="1.0" encoding="UTF-8"?><a>').decode()},
             "well-formed"),
            ({"businessDocument": base64.b64encode(b"<a/>").decode()}, "UTF-8"),
            ({"contentType": "text/plain"}, "ContentType"),
            ({"contentTransferEncoding": "8bit"}, "ContentTransferEncoding"),
            ({"senderHerId": None}, "SenderHerId"),
            ({"senderHerId": "7100201"}, "SenderHerId"),
            ({"receiverHerIds": []}, "ReceiverHerIds"),
            ({"receiverHerIds": [7102001, 7102001]}, "ReceiverHerIds"),
            ({"messageTypeIdentificator": ""}, "MessageTypeIdentificator"),
        ]  # fmt: skip
        for change, word in cases:
            body = problem(await api.send(DIALOG, HITRA, [GP], **change), 400)
            assert body["errorCode"] == 1000 and any(word in e for e in body["validationErrors"]), (change, body)

    async def test_a_receiver_nobody_knows_is_refused(self, api: Api) -> None:
        assert "9999999" in problem(await api.send(DIALOG, HITRA, ["9999999"]), 400)["detail"]

    async def test_a_message_between_two_api_users(self, api: Api) -> None:
        sent = await api.send(DIALOG, HITRA, [GP])
        assert sent.status == 202
        message_id = sent.body["id"]
        new = [n for n in await api.notifications((GP,), 0) if n["type"] == "NewMessage"]
        assert [(n["relatedMessageId"], n["notificationTriggeredByHerId"]) for n in new] == [(message_id, int(HITRA))]
        meta = (await api.call("GET", f"/messages/{message_id}")).body
        assert meta == {
            "id": message_id,
            "senderHerId": int(HITRA),
            "receiverHerIds": [int(GP)],
            "businessDocumentId": "52de51c7-fef1-4392-a31a-f66e6bea0f82",
            "businessDocumentGenDate": "2026-11-18T09:12:44",
            "businessDocumentMsgType": "DIALOG_HELSEFAGLIG",
            "contentType": "application/xml",
        }
        document = (await api.call("GET", f"/messages/{message_id}/business-document")).body
        assert base64.b64decode(document["businessDocument"]) == DIALOG
        assert (document["contentType"], document["contentTransferEncoding"]) == ("application/xml", "base64")
        assert await api.status(message_id) == [
            {"receiverHerId": int(GP), "transportDeliveryState": "Unconfirmed", "sent": True, "apprecInfo": None}
        ]
        # downloaded: the receiving side has it, which acknowledges the transport
        downloaded = {"receiverHerId": int(GP)}
        assert (await api.call("PUT", f"/messages/{message_id}/downloaded", json=downloaded)).status == 204
        problem(await api.call("PUT", f"/messages/{message_id}/downloaded", json={"receiverHerId": int(FROYA)}), 400)
        assert (await api.status(message_id))[0]["transportDeliveryState"] == "Acknowledged"
        # the AppRec: refused without errors when rejecting, then an OK one
        rejected = {"appRecSenderHerId": int(GP), "appRecStatus": "Rejected", "applicationName": "EPJ"}
        assert problem(await api.call("POST", f"/messages/{message_id}/apprec", json=rejected), 400)["validationErrors"]
        ok = {"appRecSenderHerId": int(GP), "appRecStatus": "Ok", "applicationName": "EPJ", "applicationVersion": "1"}
        apprec = await api.call("POST", f"/messages/{message_id}/apprec", json=ok)
        assert apprec.status == 202
        info = (await api.status(message_id))[0]["apprecInfo"]
        assert info == {"appRecStatus": "Ok", "appRecErrorList": [], "appRecId": apprec.body["id"]}
        sender_notes = await api.notifications((HITRA,), 0)
        assert {n["type"] for n in sender_notes} >= {
            "MessageApprecInfoUpdated",
            "MessageDeliveryStateUpdated",
            "NewMessage",
        }
        root = await apprec_root(api, apprec.body["id"])
        assert root.findtext(f"{{{APPREC_NS}}}OriginalMsgId/{{{APPREC_NS}}}Id") == meta["businessDocumentId"]
        assert root.find(f"{{{APPREC_NS}}}Status").get("V") == "1"
        again = await api.call(
            "POST", f"/messages/{apprec.body['id']}/apprec", json={**ok, "appRecSenderHerId": int(HITRA)}
        )
        problem(again, 400)  # an AppRec is never answered with an AppRec
        problem(await api.call("GET", "/messages/3fa85f64-5717-4562-b3fc-2c963f66afa6"), 404)
        problem(await api.call("GET", "/messages/not-a-guid"), 400)

    async def test_reject_message_filters_refuse_and_tell(self, api: Api) -> None:
        config = {"herId": int(GP), "receiveNotificationChannel": "Api", "receiveRefusedMessageNotices": True,
                  "rejectMessageFilters": {"MessageFunction": ["DIALOG_HELSEFAGLIG"]}}  # fmt: skip
        assert (await api.call("PUT", "/mshconfigurations", json={"configurations": [config]})).status == 204
        sent = await api.send(DIALOG, HITRA, [GP])
        assert [n["type"] for n in await api.notifications((GP,), 0)] == ["RefusedMessage"]
        assert (await api.status(sent.body["id"]))[0]["transportDeliveryState"] == "Rejected"


async def apprec_root(api: Api, message_id: str) -> Any:
    document = (await api.call("GET", f"/messages/{message_id}/business-document")).body
    return etree.fromstring(base64.b64decode(document["businessDocument"]))


# --- notifications ----------------------------------------------------------------------------------------


class TestNotifications:
    async def test_offsets_grow_with_gaps_and_resume_after_the_stored_offset(self, api: Api) -> None:
        for _ in range(4):
            assert (await api.send(DIALOG, HITRA, [GP])).status == 202
        everything = await api.notifications((GP, HITRA), 0)
        offsets = [n["offset"] for n in everything]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        assert any(b - a > 1 for a, b in itertools.pairwise(offsets)), "offsets are global: gaps"
        gp = [n for n in everything if n["notificationReceiverHerId"] == int(GP)]
        assert len(gp) == 4 and all(n["type"] == "NewMessage" for n in gp)
        # resume after the last processed offset: only what is newer
        stored = gp[1]["offset"]
        assert [n["offset"] for n in await api.notifications((GP,), stored)] == [n["offset"] for n in gp[2:]]
        # a client that stored an older offset than it processed gets those again: redelivery is normal
        older = await api.notifications((GP,), gp[0]["offset"])
        assert [n["notificationId"] for n in older] == [n["notificationId"] for n in gp[1:]]
        # paging
        page = await api.notifications((GP,), 0, count=2)
        assert page == gp[:2]
        assert await api.notifications((GP,), gp[-1]["offset"]) == []

    async def test_query_parameters_are_checked(self, api: Api) -> None:
        cases = [
            [("HerIds", GP)],  # Offset is required
            [("HerIds", GP), ("Offset", "-1")],
            [("Offset", "0")],
            [("HerIds", GP), ("HerIds", GP), ("Offset", "0")],
            [("HerIds", "abc"), ("Offset", "0")],
            [("HerIds", GP), ("Offset", "0"), ("NotificationsToFetch", "0")],
            [("HerIds", GP), ("Offset", "0"), ("NotificationsToFetch", "1001")],
            [*(("HerIds", str(1000 + i)) for i in range(1501)), ("Offset", "0")],
        ]
        for params in cases:
            assert problem(await api.call("GET", "/notifications", params=params), 400)["validationErrors"]
        lower = [("herids", GP), ("offset", "0"), ("notificationstofetch", "1000")]  # names bind case-insensitively
        assert (await api.call("GET", "/notifications", params=lower)).status == 200


async def read_events(response: aiohttp.ClientResponse, count: int) -> list[tuple[str, str]]:
    """The next ``count`` SSE events (comments skipped) as (event, data)."""
    events: list[tuple[str, str]] = []
    name, data = "", list[str]()
    async with asyncio.timeout(60):  # a guard against a hang, not a timing assertion
        while len(events) < count:
            line = (await response.content.readline()).decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\r\n")
            if not line:
                if name or data:
                    events.append((name or "message", "\n".join(data)))
                name, data = "", []
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
    return events


class TestStream:
    async def test_connected_then_notifications_from_the_offset_and_then_live(self, api: Api) -> None:
        first = (await api.send(DIALOG, HITRA, [GP])).body["id"]
        params = [("HerIds", GP), ("Offset", "0")]
        headers = api.headers(Accept="text/event-stream")
        async with api.client.get("/notifications/stream", params=params, headers=headers) as stream:
            assert stream.status == 200 and stream.content_type == "text/event-stream"
            assert await read_events(stream, 1) == [("connected", "")]
            (name, data), = await read_events(stream, 1)  # fmt: skip
            assert name == "notification" and json.loads(data)["relatedMessageId"] == first
            second = (await api.send(DIALOG, HITRA, [GP])).body["id"]
            (name, data), = await read_events(stream, 1)  # fmt: skip
            assert json.loads(data)["relatedMessageId"] == second and json.loads(data)["type"] == "NewMessage"

    async def test_without_offset_the_stream_starts_at_the_tail(self, api: Api) -> None:
        await api.send(DIALOG, HITRA, [GP])
        async with api.client.get("/notifications/stream", params=[("HerIds", GP)], headers=api.headers()) as stream:
            assert await read_events(stream, 1) == [("connected", "")]
            later = (await api.send(DIALOG, HITRA, [GP])).body["id"]
            (_, data), = await read_events(stream, 1)  # fmt: skip
            assert json.loads(data)["relatedMessageId"] == later

    async def test_a_dropped_stream_resumes_from_the_stored_offset(self, api: Api) -> None:
        ids = [(await api.send(DIALOG, HITRA, [GP])).body["id"] for _ in range(5)]
        api.sim.faults.drop_stream(after_events=2)
        params = [("HerIds", GP), ("Offset", "0")]
        got: list[dict[str, Any]] = []
        async with api.client.get("/notifications/stream", params=params, headers=api.headers()) as stream:
            got += [json.loads(d) for _, d in (await read_events(stream, 3))[1:]]
            with pytest.raises((aiohttp.ClientPayloadError, EOFError)):
                await read_events(stream, 1)  # cut: no clean end of the body
        assert [n["relatedMessageId"] for n in got] == ids[:2]
        params = [("HerIds", GP), ("Offset", str(got[-1]["offset"]))]
        async with api.client.get("/notifications/stream", params=params, headers=api.headers()) as stream:
            rest = [json.loads(d) for _, d in (await read_events(stream, 4))[1:]]
        assert [n["relatedMessageId"] for n in rest] == ids[2:]

    async def test_stream_parameters_are_checked(self, api: Api) -> None:
        problem(await api.call("GET", "/notifications/stream", params=[("Offset", "0")]), 400)
        problem(await api.call("GET", "/notifications/stream", params=[("HerIds", "7999999")]), 403)


# --- the scripted EDI peers -------------------------------------------------------------------------------


class TestPeers:
    async def test_a_peer_acknowledges_after_its_delay_and_answers_ok(self, api: Api) -> None:
        api.sim.network.peer(ORKDAL_MED).script = PeerScript(delay=30, apprec_delay=60)
        message_id = (await api.send(INNLEGGELSE, SKAUN, [ORKDAL_MED, LEGEVAKT])).body["id"]
        states = {s["receiverHerId"]: s for s in await api.status(message_id)}
        assert states[int(ORKDAL_MED)] == {
            "receiverHerId": int(ORKDAL_MED), "transportDeliveryState": "Unconfirmed", "sent": False, "apprecInfo": None
        }  # fmt: skip
        api.sim.advance(29)
        assert (await api.status(message_id))[0]["sent"] is True
        assert (await api.status(message_id))[0]["transportDeliveryState"] == "Unconfirmed"
        api.sim.advance(1)
        assert (await api.status(message_id))[0]["transportDeliveryState"] == "Acknowledged"
        assert (await api.status(message_id))[0]["apprecInfo"] is None
        api.sim.advance(60)
        info = (await api.status(message_id))[0]["apprecInfo"]
        assert info["appRecStatus"] == "Ok" and info["appRecErrorList"] == []
        types = [
            n["type"]
            for n in await api.notifications((SKAUN,), 0)
            if n["notificationTriggeredByHerId"] == int(ORKDAL_MED)
        ]
        assert types == [
            "MessageSentStateUpdated",
            "MessageDeliveryStateUpdated",
            "NewMessage",
            "MessageApprecInfoUpdated",
        ]
        apprec = (await api.call("GET", f"/messages/{info['appRecId']}")).body
        assert (apprec["senderHerId"], apprec["receiverHerIds"]) == (int(ORKDAL_MED), [int(SKAUN)])
        root = await apprec_root(api, info["appRecId"])
        assert root.find(f"{{{APPREC_NS}}}Sender/{{{APPREC_NS}}}Role").get("V") == "PRIM"
        assert api.sim.network.peer(ORKDAL_MED).received[0].id == message_id

    @pytest.mark.parametrize(("transport", "reason"), [("Rejected", "MessageError: unknown CPA"), ("Abandoned", None)])
    async def test_a_peer_rejects_or_abandons_without_an_apprec(
        self, api: Api, transport: str, reason: str | None
    ) -> None:
        api.sim.network.peer(ORKDAL_MED).script = PeerScript(transport=transport, reason=reason, delay=5)  # type: ignore[arg-type]
        message_id = (await api.send(INNLEGGELSE, SKAUN, [ORKDAL_MED])).body["id"]
        api.sim.advance(3600)
        (state,) = await api.status(message_id)
        assert (state["transportDeliveryState"], state["sent"], state["apprecInfo"]) == (transport, True, None)
        (note,) = [n for n in await api.notifications((SKAUN,), 0) if n["type"] == "MessageDeliveryStateUpdated"]
        assert note["description"] == (reason or "No ebXML acknowledgment from the receiver after sending and "
                                       "resending; delivery abandoned.")  # fmt: skip

    async def test_a_peer_rejects_with_8221_codes(self, api: Api) -> None:
        errors = (AppRecErrorInfo("E35", "Pasienten finnes ikke"), AppRecErrorInfo("X99", "Annen feil"))
        api.sim.network.peer(LAB).script = PeerScript(apprec="Rejected", apprec_errors=errors)
        message_id = (await api.send(DIALOG, HITRA, [LAB])).body["id"]
        api.sim.advance()
        info = (await api.status(message_id))[0]["apprecInfo"]
        assert info["appRecStatus"] == "Rejected"
        assert [(e["errorCode"], e["details"]) for e in info["appRecErrorList"]] == [
            ("E35", "Pasienten finnes ikke"), ("X99", "Annen feil")
        ]  # fmt: skip
        root = await apprec_root(api, info["appRecId"])
        assert root.find(f"{{{APPREC_NS}}}Status").get("V") == "2"
        assert [e.get("V") for e in root.findall(f"{{{APPREC_NS}}}Error")] == ["E35", "X99"]

    async def test_a_peer_sends_its_own_message_and_gets_our_apprec(self, api: Api) -> None:
        record = api.sim.network.send(ORKDAL_MED, EPIKRISE)
        assert record.receivers == (GP, FROYA)  # read from the document: primary, then the copy
        for her in (GP, FROYA):
            (note,) = await api.notifications((her,), 0)
            assert (note["type"], note["relatedMessageId"]) == ("NewMessage", record.id)
        ok = {"appRecSenderHerId": int(FROYA), "appRecStatus": "Ok"}
        apprec = await api.call("POST", f"/messages/{record.id}/apprec", json=ok)
        assert apprec.status == 202
        api.sim.advance()
        (received,) = api.sim.network.peer(ORKDAL_MED).received
        assert received.is_apprec and received.original_id == record.id
        assert (await api.status(apprec.body["id"]))[0]["transportDeliveryState"] == "Acknowledged"
        root = await apprec_root(api, apprec.body["id"])
        assert root.find(f"{{{APPREC_NS}}}Sender/{{{APPREC_NS}}}Role").get("V") == "COP"
        with pytest.raises(ValueError, match="API users"):
            api.sim.network.send(ORKDAL_MED, EPIKRISE, to=[LAB])

    @pytest.mark.parametrize(
        ("peer", "fixture", "receivers", "msg_type"),
        [
            (LAB, "svarrapport-1.4/svar-lab-biokjemi-latin1.xml", [GP], "SVAR_LAB"),
            (ORKDAL_MED, "plo-utskrivningsrapport-1.6/utskrivningsrapport-kopi-fastlege.xml", [MELDAL, GP],
             "UTSKRIVNINGSRAPPORT"),
        ],
    )  # fmt: skip
    async def test_peers_send_svarrapport_and_plo(
        self, api: Api, peer: str, fixture: str, receivers: list[str], msg_type: str
    ) -> None:
        """What an EDI user sends reaches the API users as it was sent (ISO-8859-1 too: only API users'
        own posts must be UTF-8)."""
        document = (FIXTURES / fixture).read_bytes()
        record = api.sim.network.send(peer, document)
        assert list(record.receivers) == receivers
        meta = (await api.call("GET", f"/messages/{record.id}")).body
        assert (meta["senderHerId"], meta["businessDocumentMsgType"]) == (int(peer), msg_type)
        body = (await api.call("GET", f"/messages/{record.id}/business-document")).body
        assert base64.b64decode(body["businessDocument"]) == document
        for her in receivers:
            assert [n["relatedMessageId"] for n in await api.notifications((her,), 0)] == [record.id]

    def test_scripts_are_checked(self) -> None:
        with pytest.raises(ValueError, match="8221"):
            PeerScript(apprec="Rejected")
        with pytest.raises(ValueError):
            PeerScript(transport="Lost")  # type: ignore[arg-type]


# --- faults -----------------------------------------------------------------------------------------------


class TestFaults:
    async def test_5xx_for_the_next_n_matching_requests(self, api: Api) -> None:
        api.sim.faults.fail(503, times=2, path="/messages*", method="POST")
        assert (await api.call("GET", "/ping")).status == 200  # another path and method: untouched
        for _ in range(2):
            assert problem(await api.send(DIALOG, HITRA, [GP]), 503)["title"] == "Service Unavailable"
        assert (await api.send(DIALOG, HITRA, [GP])).status == 202
        api.sim.faults.fail(500)
        assert problem(await api.call("GET", "/ping"), 500)["detail"] == "An unknown error occurred"

    async def test_429_says_when_to_retry(self, api: Api) -> None:
        api.sim.faults.rate_limit(retry_after=7)
        answer = await api.call("GET", "/ping")
        assert answer.status == 429 and answer.headers["Retry-After"] == "7"
        assert (await api.call("GET", "/ping")).status == 200

    async def test_a_slow_answer_is_held_until_released(self, api: Api) -> None:
        api.sim.faults.slow(3600, path="/ping")
        pending = asyncio.create_task(api.call("GET", "/ping"))
        async with asyncio.timeout(60):  # a guard against a hang, not a timing assertion
            await api.sim.faults.holding()
        assert not pending.done()
        api.sim.faults.release()
        assert (await pending).status == 200

    async def test_a_slow_answer_outlasts_a_client_timeout(self, api: Api) -> None:
        api.sim.faults.slow(3600)
        with pytest.raises(asyncio.TimeoutError):
            await api.client.get("/ping", headers=api.headers(), timeout=aiohttp.ClientTimeout(total=0.5))
        api.sim.faults.release()

    async def test_an_expired_token_is_401_with_a_dpop_challenge(self, api: Api) -> None:
        api.sim.faults.expire_token()
        answer = await api.call("GET", "/ping")
        assert answer.status == 401 and 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
        assert answer.headers["WWW-Authenticate"].startswith("DPoP ")
        assert (await api.call("GET", "/ping")).status == 200

    async def test_a_notification_delivered_twice(self, api: Api) -> None:
        api.sim.faults.duplicate_notifications(1)
        await api.send(DIALOG, HITRA, [GP])  # the first notification it causes is the sender's "sent"
        notes = await api.notifications((HITRA, GP), 0)
        first, second = [n for n in notes if n["type"] == "MessageSentStateUpdated"]
        assert first["notificationId"] == second["notificationId"] and first["offset"] < second["offset"]
        assert [n["type"] for n in notes].count("NewMessage") == 1
        assert api.sim.faults.applied == ["duplicate"]

    async def test_faults_from_a_spec_and_the_control_api(self, api: Api) -> None:
        answer = await api.client.post("/_sim/faults", json={"kind": "status", "status": 502, "path": "/ping"})
        assert answer.status == 204
        assert (await api.call("GET", "/ping")).status == 502
        assert (await api.client.post("/_sim/faults", json={"kind": "nonsense"})).status == 400
        await api.client.post("/_sim/faults", json={"kind": "rate_limit", "times": 5})
        assert (await api.client.delete("/_sim/faults")).status == 204
        assert (await api.call("GET", "/ping")).status == 200
        api.sim.network.peer(LAB).script = PeerScript(delay=10)
        message_id = (await api.send(DIALOG, HITRA, [LAB])).body["id"]
        assert (await (await api.client.post("/_sim/advance", json={"seconds": 10})).json())["ran"] == 3
        assert (await api.status(message_id))[0]["apprecInfo"]["appRecStatus"] == "Ok"
        document = base64.b64encode(EPIKRISE).decode()
        sent = await api.client.post(f"/_sim/peers/{ORKDAL_MED}/messages", json={"businessDocument": document})
        assert sent.status == 201
        received = await (await api.client.get(f"/_sim/peers/{LAB}/received")).json()
        assert [r["id"] for r in received] == [message_id]


# --- the runnable simulator -------------------------------------------------------------------------------


SIM_TOML = """
[server]
port = 8092

[msh]
api_users = ["7100201", "7102001", "7100101"]
first_offset = 5000
max_request_mb = 1

[auth]
client_id = "sio-gateway"
her_ids = ["7100201", "7102001", "7100101"]

[[peer]]
her_id = "7200101"
name = "Orkdal sjukehus, medisinsk avdeling"
transport = "Acknowledged"
apprec = "Rejected"
apprec_errors = [{ code = "E35", details = "Pasienten finnes ikke" }]
delay_seconds = 2
apprec_delay_seconds = 3

[[peer.send]]
file = "{epikrise}"
after_seconds = 5

[[peer]]
her_id = "7200201"
transport = "Abandoned"
apprec = "none"

[[fault]]
kind = "status"
status = 503
times = 2
path = "/messages*"
"""


class TestRunnable:
    def test_the_command_is_registered(self) -> None:
        args = build_parser().parse_args(["sim", "nhn", "--config", "sim.toml", "--port", "18092"])
        assert (args.simulator, args.port, args.config) == ("nhn", 18092, Path("sim.toml"))

    async def test_a_config_file_builds_the_simulator(self, tmp_path: Path) -> None:
        config_file = tmp_path / "sim.toml"
        config_file.write_text(SIM_TOML.replace("{epikrise}", EPIKRISE_FILE.as_posix()), encoding="utf-8")
        config = load_sim_config(config_file)
        assert config.principal == Principal("sio-gateway", frozenset({HITRA, GP, FROYA}))
        sim, app, helseid = build(config, clock=ManualClock(START), tick=False)
        assert helseid is None and sim.max_request_bytes == 2**20
        assert sim.network.peer(ORKDAL_MED).script.apprec_errors == (AppRecErrorInfo("E35", "Pasienten finnes ikke"),)
        assert sim.network.peer(LAB).script.apprec is None
        sim.advance(5)  # the peer's configured message arrives
        (record,) = sim.state.messages.values()
        assert record.sender == ORKDAL_MED and record.receivers == (GP, FROYA)
        async with TestClient(TestServer(app)) as client:
            api = Api(client, sim, principal="ignored-by-the-static-authorizer")
            assert (await api.call("GET", "/ping")).status == 200
            assert (await api.configure((HITRA, GP))).status == 204
            assert (await api.send(DIALOG, HITRA, [GP])).status == 503  # the configured fault
            notes = await api.notifications((GP,), 0)
            assert notes[0]["offset"] == 5000 and notes[0]["relatedMessageId"] == record.id

    def test_a_config_with_helseid_mounts_the_fake_helseid(self, tmp_path: Path) -> None:
        from joserfc.jwk import RSAKey

        key = RSAKey.generate_key(2048, private=True)
        (tmp_path / "client.jwk").write_text(json.dumps(key.as_dict(private=True)), encoding="utf-8")
        (tmp_path / "sim.toml").write_text(
            '[helseid]\nport = 18093\n[[helseid.client]]\nclient_id = "sio-gateway"\nkey_file = "client.jwk"\n'
            'her_ids = ["7100201"]\n',
            encoding="utf-8",
        )
        config = load_sim_config(tmp_path / "sim.toml")
        assert config.helseid is not None and "d" not in config.helseid.clients[0].public_jwk  # public half only
        _, _, helseid = build(config, tick=False)
        assert helseid is not None

    def test_a_bad_config_says_what_is_wrong(self, tmp_path: Path) -> None:
        from gateway.errors import ConfigError

        (tmp_path / "sim.toml").write_text('[[peer]]\nname = "no her_id"\n', encoding="utf-8")
        with pytest.raises(ConfigError, match="her_id"):
            load_sim_config(tmp_path / "sim.toml")

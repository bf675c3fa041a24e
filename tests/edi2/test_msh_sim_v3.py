"""The simulated Meldingstjener, API version 3, endpoint by endpoint: every check a real server makes,
configurations and locks, messages and AppRecs, the notification log and SSE.

The scripted EDI peers are ``test_msh_sim_peers.py``, the fault knobs ``test_msh_sim_faults.py``, the
runnable configuration ``test_msh_sim_config.py``; what they share is ``msh_harness.py``. Assertions are on
outcomes (statuses, bodies, states), never on timings.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.testing.nhn.msh import create_msh_app
from tests.edi2.msh_harness import (
    APPREC_NS,
    DIALOG,
    FROYA,
    GP,
    HITRA,
    LATIN1,
    Api,
    apprec_root,
    configured_api,
    header_authorizer,
    make_sim,
    problem,
)


@pytest.fixture(name="api")
async def _api() -> AsyncIterator[Api]:
    async with configured_api() as api:
        yield api


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

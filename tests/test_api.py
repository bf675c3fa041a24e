"""The HTTP API on a real loopback server: accept, follow, fetch, refuse with the KITH code, inbox, admin."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app
from gateway.config import TokenSettings
from gateway.service import Gateway

from .conftest import require_shared
from .region import fixture_bytes, settings_for

FORESPORSEL = "dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml"
HITRA = {"Authorization": "Bearer hitra-secret"}
ADMIN = {"Authorization": "Bearer admin-secret"}
GP = {"Authorization": "Bearer gp-secret"}


@pytest.fixture(name="client")
async def _client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = settings_for(tmp_path, security={"protection": "none"})
    tokens = (
        TokenSettings("hitra-ehr", token="hitra-secret", senders=("7100201",)),
        TokenSettings("gp-ehr", token="gp-secret", senders=("7102001",)),
        TokenSettings("ops", token="admin-secret", senders=("*",), admin=True),
    )
    settings = dataclasses.replace(settings, api=dataclasses.replace(settings.api, tokens=tokens))
    async with TestClient(TestServer(create_app(Gateway(settings)))) as client:
        yield client


async def wait_state(client: TestClient, message_id: str, state: str) -> dict:  # type: ignore[type-arg]
    for _ in range(100):
        response = await client.get(f"/v1/messages/{message_id}", headers=ADMIN)
        body = await response.json()
        if body["state"] == state:
            return body  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} never reached {state}: {body['state']}")


class TestMessages:
    async def test_submit_follow_and_fetch(self, client: TestClient) -> None:
        """202 with id/msg_id/kind/state; the status shows deliveries, AppRec and trace; the document is byte-exact."""
        response = await client.post("/v1/messages", data=fixture_bytes(FORESPORSEL), headers=HITRA)
        assert response.status == 202
        body = await response.json()
        assert set(body) == {"id", "msg_id", "kind", "state"} and body["kind"] == "dialogmelding-1.1"
        view = await wait_state(client, body["id"], "acknowledged")
        [delivery] = view["deliveries"]
        assert delivery["receiver"] == "7102001" and delivery["apprec"]["status"] == "1"
        assert view["trace"][0]["event"] == "message.accepted"
        document = await client.get(f"/v1/messages/{body['id']}/document", headers=HITRA)
        assert await document.read() == fixture_bytes(FORESPORSEL)
        again = await client.post("/v1/messages", data=fixture_bytes(FORESPORSEL), headers=HITRA)
        assert again.status == 200 and (await again.json())["id"] == body["id"]

    async def test_refusals_are_json_with_the_kith_code(self, client: TestClient) -> None:
        """Broken input is a 4xx carrying code, event and a plain-words message - never a 500."""
        cases = {
            "broken/not-well-formed.xml": (400, "T01"),
            "broken/unsupported-kind.xml": (422, "T10"),
            "broken/bad-msgid.xml": (422, "E10"),
            "broken/unknown-receiver.xml": (422, "E21"),
            "broken/patient-not-identified.xml": (422, "E36"),
            "broken/schema-invalid.xml": (422, "T02"),  # last: only the official PLO schema finds it
        }
        for junk in (b"", b"\x00\xff", b"<a>" * 10):
            response = await client.post("/v1/messages", data=junk, headers=ADMIN)
            assert 400 <= response.status < 500
        for name, (status, code) in cases.items():
            if code == "T02":
                require_shared()
            response = await client.post("/v1/messages", data=fixture_bytes(name), headers=ADMIN)
            body = await response.json()
            assert (response.status, body["error"]["code"]) == (status, code), name
            assert body["error"]["event"] and body["error"]["message"]

    async def test_authentication_and_authorisation(self, client: TestClient) -> None:
        """No token: 401. A client may only send for its own parties and see its own messages."""
        response = await client.post("/v1/messages", data=fixture_bytes(FORESPORSEL))
        assert response.status == 401
        response = await client.post("/v1/messages", data=fixture_bytes(FORESPORSEL), headers=GP)
        assert response.status == 403 and (await response.json())["error"]["event"] == "api.forbidden"
        response = await client.post("/v1/messages", data=fixture_bytes(FORESPORSEL), headers=HITRA)
        message_id = (await response.json())["id"]
        assert (
            await client.get(f"/v1/messages/{message_id}", headers=GP)
        ).status == 404  # Hitra's record, not the GP's
        response = await client.get("/v1/messages", headers=HITRA, params={"kind": "dialogmelding-1.1"})
        assert [m["id"] for m in (await response.json())["items"]] == [message_id]

    async def test_oversize_is_413(self, client: TestClient) -> None:
        """A body over the cap is refused with 413 and T01."""
        response = await client.post("/v1/messages", data=io.BytesIO(b"<a>" + b" " * 11_000_000), headers=ADMIN)
        assert response.status == 413 and (await response.json())["error"]["code"] == "T01"

    async def test_healthz(self, client: TestClient) -> None:
        """The health check answers without a token."""
        response = await client.get("/healthz")
        assert response.status == 200 and (await response.json())["status"] == "ok"


class TestInbox:
    async def test_pull_fetch_ack(self, client: TestClient) -> None:
        """The GP's EHR lists its inbox, fetches the document, acks it (idempotently); it leaves the inbox."""
        response = await client.post("/v1/messages", data=fixture_bytes(FORESPORSEL), headers=HITRA)
        await wait_state(client, (await response.json())["id"], "acknowledged")
        inbox = await (await client.get("/v1/inbox", params={"receiver": "7102001"}, headers=GP)).json()
        [item] = inbox["items"]
        assert item["direction"] == "in" and item["sender"] == "7100201"
        document = await client.get(f"/v1/inbox/{item['id']}/document", headers=GP)
        assert await document.read() == fixture_bytes(FORESPORSEL)
        assert (await client.get("/v1/inbox", params={"receiver": "7102001"}, headers=HITRA)).status == 403
        first = await (await client.post(f"/v1/inbox/{item['id']}/ack", headers=GP)).json()
        second = await (await client.post(f"/v1/inbox/{item['id']}/ack", headers=GP)).json()
        assert (first["already"], second["already"]) == (False, True)
        inbox = await (await client.get("/v1/inbox", params={"receiver": "7102001"}, headers=GP)).json()
        assert inbox["items"] == []


class TestSync:
    """``POST /v1/sync`` (the round trip over the bus is in tests/amqp/test_amqp_sync.py): what it refuses."""

    async def test_refusals(self, client: TestClient) -> None:
        async def sync(body: bytes, headers: dict[str, str], query: str = "") -> tuple[int, str]:
            response = await client.post(f"/v1/sync{query}", data=body, headers=headers)
            return response.status, (await response.json())["error"]["event"]

        message = fixture_bytes(FORESPORSEL)
        # the GP is served inside this gateway: a hand-over has no request/reply
        assert await sync(message, HITRA) == (422, "sync.not_supported")
        assert await sync(message, GP) == (403, "api.forbidden")  # the GP's token may not ask for Hitra
        assert await sync(b"", HITRA) == (400, "api.bad_request")
        for bad in ("0", "-1", "15.5", "soon"):
            assert await sync(message, HITRA, f"?timeout_s={bad}") == (400, "api.bad_request")
        assert (await sync(fixture_bytes("broken/bad-msgid.xml"), HITRA))[0] == 422


class TestAdmin:
    async def test_admin_needs_admin(self, client: TestClient) -> None:
        """Queue control is for admin tokens; every action lands in the trace with the actor."""
        assert (await client.get("/v1/admin/routes", headers=HITRA)).status == 403
        response = await client.post("/v1/admin/routes/7200101/pause", headers=ADMIN)
        assert response.status == 200
        routes = await (await client.get("/v1/admin/routes", headers=ADMIN)).json()
        assert {"route": "7200101", "paused": True}.items() <= routes["items"][0].items()
        response = await client.post("/v1/admin/messages/nope/retry", headers=ADMIN)
        assert response.status == 404


class TestRequestHygiene:
    async def test_route_names_and_receivers_are_her_ids(self, client: TestClient) -> None:
        """A route (path or ?route=) and an inbox receiver are 1-12 digits; anything else is 400, unrepeated."""
        for bad in ("abc", "7" * 13, "72001%2001", "%F0%9F%92%A3"):
            response = await client.post(f"/v1/admin/routes/{bad}/pause", headers=ADMIN)
            body = await response.json()
            assert (response.status, body["error"]["event"]) == (400, "api.bad_request"), bad
        assert (await client.post("/v1/admin/retry-dead", params={"route": "x" * 500}, headers=ADMIN)).status == 400
        response = await client.get("/v1/inbox", params={"receiver": "<script>"}, headers=GP)
        assert response.status == 400 and "<script>" not in await response.text()

    async def test_odd_tokens_and_unknown_paths(self, client: TestClient) -> None:
        """A token of non-ASCII or control characters is unknown (401, never a 500); no route is JSON 404."""
        for token in ("gp-secret\u00e6", "gp secret", "x" * 600):
            response = await client.get("/v1/messages", headers={"Authorization": f"Bearer {token}"})
            assert (response.status, (await response.json())["error"]["event"]) == (401, "api.unauthorized")
        response = await client.get("/v2/nothing")
        assert (response.status, (await response.json())["error"]["event"]) == (404, "api.not_found")

    async def test_healthz_reports_its_checks(self, client: TestClient) -> None:
        """The health check says which parts answered."""
        body = await (await client.get("/healthz")).json()
        assert body["checks"] == {"workers": "ok", "store": "ok"} and "queue" in body

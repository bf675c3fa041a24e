"""The simulated Meldingstjener's fault knobs, through API version 3: 5xx, 429 with Retry-After, slow
answers, expired tokens, duplicate notifications - armed from Python and from the control API ``/_sim/…``.
A dropped SSE stream is ``test_msh_sim_v3.py``'s (``TestStream``).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.testing.nhn.peers import PeerScript
from tests.edi2.msh_harness import DIALOG, EPIKRISE, GP, HITRA, LAB, ORKDAL_MED, Api, configured_api, problem


@pytest.fixture(name="api")
async def _api() -> AsyncIterator[Api]:
    async with configured_api() as api:
        yield api


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

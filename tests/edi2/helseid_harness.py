"""The fake HelseID and a tiny DPoP-protected API on loopback, sharing one manual clock with the client.

Every test starts its own servers (``async with running(...) as h``), so no state - nonces, replay caches,
counters - leaks between tests. Keys are made once per session: generating RSA keys is the slow part.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc.jwk import RSAKey
from multidict import CIMultiDictProxy

from adapters.helseid.client import HelseIdClient
from adapters.helseid.dpop import SigningKey
from gateway.clock import ManualClock
from gateway.testing.nhn.dpop_check import DpopAuthorizer
from gateway.testing.nhn.helseid import HELSEID, FakeHelseId, HelseIdConfig, RegisteredClient, helseid_app

CLIENT_ID = "sio-gateway"
HER_IDS = frozenset({"8142519", "8142520"})
START = 1_800_000_000.0  # a fixed moment: nothing here reads the wall clock


@functools.cache
def rsa_key(name: str) -> RSAKey:
    """One RSA key per name for the whole session ("client", "other", ...)."""
    del name
    return RSAKey.generate_key(2048, private=True)


@functools.cache
def signing_key(name: str = "client", alg: str = "PS512") -> SigningKey:
    return SigningKey(rsa_key(name), alg="RS256" if alg == "RS256" else "PS512")


def registered(
    client_id: str = CLIENT_ID, key: str = "client", *, her_ids: frozenset[str] | None = HER_IDS, **kw: Any
) -> RegisteredClient:
    return RegisteredClient(client_id, rsa_key(key).as_dict(private=False), her_ids=her_ids, **kw)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: CIMultiDictProxy[str]


@dataclass
class Harness:
    clock: ManualClock
    fake: FakeHelseId
    authorizer: DpopAuthorizer
    session: aiohttp.ClientSession
    issuer: str
    api_base: str

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/connect/token"

    def api_url(self, path: str = "/api/messages") -> str:
        return self.api_base + path

    def client(self, key: SigningKey | None = None, **kw: Any) -> HelseIdClient:
        kw.setdefault("clock", self.clock.now)
        issuer = kw.pop("issuer", self.issuer)
        client_id = kw.pop("client_id", CLIENT_ID)
        return HelseIdClient(issuer, client_id, key or signing_key(), session=self.session, **kw)

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, data: Any = None
    ) -> Answer:
        async with self.session.request(method, url, headers=headers, data=data, allow_redirects=False) as resp:
            raw = await resp.read()
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {"raw": raw.decode(errors="replace")}
            return Answer(resp.status, body if isinstance(body, dict) else {"value": body}, resp.headers)

    async def call(self, client: HelseIdClient, method: str = "GET", path: str = "/api/messages") -> Answer:
        """One API call with the client's headers, as the adapter makes it (no retry)."""
        url = self.api_url(path)
        return await self.request(method, url, headers=await client.headers(method, url))

    async def post_token(self, form: Mapping[str, str], dpop: str | None = None) -> Answer:
        headers = {"DPoP": dpop} if dpop is not None else {}
        return await self.request("POST", self.token_endpoint, headers=headers, data=dict(form))


async def _principal_echo(request: web.Request) -> web.Response:
    principal = await request.app[_AUTHORIZER](request)
    her_ids = None if principal.her_ids is None else sorted(principal.her_ids)
    return web.json_response({"client_id": principal.client_id, "her_ids": her_ids})


_AUTHORIZER = web.AppKey("authorizer", DpopAuthorizer)


@asynccontextmanager
async def running(
    *clients: RegisteredClient, api_nonce: bool = False, api_audience: str = "nhn:msh", **config: Any
) -> AsyncIterator[Harness]:
    """The fake HelseID (with ``clients``, or the default one) and an API behind a ``DpopAuthorizer``."""
    clock = ManualClock(START)
    helseid = helseid_app(HelseIdConfig(clients=clients or (registered(),), clock=clock.now, **config))
    fake = helseid[HELSEID]
    async with TestServer(helseid, host="127.0.0.1") as idp:
        issuer = f"http://127.0.0.1:{idp.port}"
        authorizer = DpopAuthorizer(
            fake.public_key,
            audience=api_audience,
            issuer=config.get("issuer", issuer),
            clock=clock.now,
            require_nonce=api_nonce,
        )
        api = web.Application()
        api[_AUTHORIZER] = authorizer
        api.router.add_route("*", "/api/{tail:.*}", _principal_echo)
        async with TestServer(api, host="127.0.0.1") as api_server, aiohttp.ClientSession() as session:
            yield Harness(clock, fake, authorizer, session, issuer, f"http://127.0.0.1:{api_server.port}")

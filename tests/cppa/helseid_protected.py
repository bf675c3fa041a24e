"""The CPPA double behind HelseID, as NHN's ``/v2/`` variant is: the fake HelseID on one loopback port, the
double on another checking DPoP-bound tokens for audience ``nhn:cppa`` and scope
``nhn:cppa/access-with-dpop`` (with its own DPoP nonces), and a HelseID client of the gateway's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.helseid.client import HelseIdClient
from gateway.testing.cppa_server import cppa_app, running
from gateway.testing.nhn.dpop_check import DpopAuthorizer
from gateway.testing.nhn.helseid import HELSEID, FakeHelseId, HelseIdConfig, helseid_app

from ..edi2.helseid_harness import CLIENT_ID, registered, signing_key

SCOPE = "nhn:cppa/access-with-dpop"


@dataclass
class Protected:
    url: str  # the double's base URL (``.../v2/``)
    issuer: str
    app: web.Application
    helseid: FakeHelseId

    def client(
        self, session: aiohttp.ClientSession, *, client_id: str = CLIENT_ID, scope: str = SCOPE
    ) -> HelseIdClient:
        return HelseIdClient(self.issuer, client_id, signing_key(), session=session, scope=scope)


@asynccontextmanager
async def protected(*, scopes: frozenset[str] = frozenset({SCOPE}), **app: Any) -> AsyncIterator[Protected]:
    """The double (``app``: cppa_app's arguments) behind a fake HelseID whose client may have ``scopes``."""
    idp_app = helseid_app(HelseIdConfig(clients=(registered(scopes=scopes),)))
    async with TestServer(idp_app, host="127.0.0.1") as idp:
        issuer = f"http://127.0.0.1:{idp.port}"
        fake = idp_app[HELSEID]
        authorizer = DpopAuthorizer(
            fake.public_key, audience="nhn:cppa", scope=SCOPE, issuer=issuer, require_nonce=True
        )
        double = cppa_app(authorizer=authorizer, prefix="/v2/", **app)
        async with running(double) as base:
            yield Protected(base + "v2/", issuer, double, fake)

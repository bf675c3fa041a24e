"""Typed keys of what the aiohttp app holds."""

from __future__ import annotations

from aiohttp import web

from gateway.api.auth import Authenticator
from gateway.pipeline.outbound import Client
from gateway.service import Gateway

GATEWAY = web.AppKey("gateway", Gateway)
AUTH = web.AppKey("auth", Authenticator)
#: the client a /v1 request's token names, found once per request (the limiter and the handler both ask)
CLIENT = web.RequestKey("client", Client)


def client_of(request: web.Request) -> Client:
    """The client whose token the request carries (Unauthorized when it carries none we know)."""
    client = request.get(CLIENT)
    if client is None:
        client = request[CLIENT] = request.app[AUTH].client(request.headers.get("Authorization"))
    return client

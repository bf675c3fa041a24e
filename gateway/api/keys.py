"""Typed keys of what the aiohttp app holds."""

from __future__ import annotations

from aiohttp import web

from gateway.api.auth import Authenticator
from gateway.service import Gateway

GATEWAY = web.AppKey("gateway", Gateway)
AUTH = web.AppKey("auth", Authenticator)

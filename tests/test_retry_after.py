"""A peer that says when to come back (HTTP ``Retry-After``) is not asked again sooner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.clock import ManualClock
from gateway.config import PROJECT_ROOT
from gateway.registry import load_register
from gateway.replay import mirror_regions
from gateway.service import Gateway
from gateway.store.base import DeliveryState
from gateway.transport import MAX_RETRY_AFTER_S, retry_after

from .region import ADMIN, fixture_bytes, settings_for

TEMPLATE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> St. Olavs (+ LiO)
STOLAV = "7200101"
MODE = web.AppKey("mode", dict)


class TestParsing:
    def test_seconds_and_dates(self) -> None:
        now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
        assert retry_after("120") == 120.0
        assert retry_after(format_datetime(now + timedelta(minutes=5), usegmt=True), now=now.timestamp()) == 300.0
        assert retry_after(format_datetime(now - timedelta(minutes=5), usegmt=True), now=now.timestamp()) == 0.0
        assert retry_after("99999999") == MAX_RETRY_AFTER_S
        assert retry_after(None) is None and retry_after("soon") is None and retry_after("-5") is None


@pytest.fixture(name="busy_peer")
async def _busy_peer() -> AsyncIterator[TestServer]:
    """A St. Olavs gateway that is busy: 429 with Retry-After 120, or 503 with an HTTP date."""

    async def busy(request: web.Request) -> web.Response:
        await request.read()
        if request.app[MODE]["now"] == "seconds":
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "120"})
        later = datetime.now(UTC) + timedelta(seconds=600)
        return web.json_response({}, status=503, headers={"Retry-After": format_datetime(later, usegmt=True)})

    app = web.Application()
    app[MODE] = {"now": "seconds"}
    app.router.add_post("/transport/http", busy)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


@pytest.mark.parametrize(("mode", "at_least"), [("seconds", 120.0), ("date", 590.0)])
async def test_the_next_attempt_waits_for_retry_after(
    tmp_path: Path, busy_peer: TestServer, mode: str, at_least: float
) -> None:
    """The first attempt gets 429/503 with Retry-After; the route's own backoff (0.2 s here) would retry at
    once, but the next attempt is scheduled no sooner than the peer asked."""
    busy_peer.app[MODE]["now"] = mode
    hub_reg, _ = mirror_regions(
        load_register(PROJECT_ROOT / "config" / "sio-region.toml"),
        hub_endpoint="http://127.0.0.1:9/transport/http",
        stolav_endpoint=str(busy_peer.make_url("/transport/http")),
    )
    clock = ManualClock()
    retry = {"base_s": 0.2, "cap_s": 1.0, "breaker_threshold": 100}
    settings = settings_for(tmp_path, security={"protection": "none"}, retry=retry)
    async with Gateway(settings, register=hub_reg, clock=clock) as hub:
        record, _ = await hub.submit(fixture_bytes(TEMPLATE), ADMIN)
        await hub.worker.drain()
        view = await hub.store.get(record.id)
        assert view is not None
        remote = next(d for d in view.deliveries if d.receiver_her == STOLAV)
        assert remote.state == DeliveryState.RETRYING and remote.attempts == 1
        assert remote.next_attempt_at is not None and remote.next_attempt_at - clock.now() >= at_least
        clock.advance(at_least / 2)
        await hub.worker.drain()  # not due yet: no second attempt
        again = await hub.store.get(record.id)
        assert again is not None
        assert next(d for d in again.deliveries if d.receiver_her == STOLAV).attempts == 1

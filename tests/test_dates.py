"""GenDates out of a sane range are refused at submit, and no stored time can make a view fail (issue 9 item 8)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.app import create_app
from gateway.api.keys import GATEWAY
from gateway.api.views import iso
from gateway.config import TokenSettings
from gateway.service import Gateway
from gateway.store.base import Direction, MessageState, NewDelivery, NewMessage

from .region import fixture_bytes, settings_for

FORESPORSEL = "dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml"
ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture(name="client")
async def _client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = settings_for(tmp_path, security={"protection": "none"})
    tokens = (TokenSettings("ops", token="admin-secret", senders=("*",), admin=True),)
    settings = dataclasses.replace(settings, api=dataclasses.replace(settings.api, tokens=tokens))
    async with TestClient(TestServer(create_app(Gateway(settings)))) as client:
        yield client


def with_gen_date(body: bytes, when: str) -> bytes:
    return re.sub(rb'<GenDate>[^<]*</GenDate>', f"<GenDate>{when}</GenDate>".encode(), body, count=1)


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59", "2200-01-01T00:00:00+01:00", "1899-12-31T12:00:00"])
async def test_implausible_gen_date_is_refused_at_submit(client: TestClient, when: str) -> None:
    """A GenDate in year 9999 (whose receipt deadline no calendar holds), centuries ahead, or before 1990."""
    body = with_gen_date(fixture_bytes(FORESPORSEL), when)
    assert body != fixture_bytes(FORESPORSEL)
    response = await client.post("/v1/messages", data=body, headers=ADMIN)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["event"] == "message.implausible_date" and "GenDate" in error["message"]


async def test_a_gen_date_a_little_ahead_is_clock_skew_and_accepted(client: TestClient) -> None:
    """Another system's clock a few minutes ahead is no reason to refuse."""
    soon = (datetime.now(UTC) + timedelta(minutes=10)).isoformat(timespec="seconds")
    response = await client.post("/v1/messages", data=with_gen_date(fixture_bytes(FORESPORSEL), soon), headers=ADMIN)
    assert response.status == 202, await response.text()


async def test_no_stored_time_makes_a_view_fail(client: TestClient) -> None:
    """A delivery whose times lie past year 9999 (written by an older version, or by hand) still shows."""
    store = client.server.app[GATEWAY].store
    message = NewMessage(
        id="f" * 32,
        direction=Direction.OUT,
        kind="dialogmelding-1.1",
        msg_type="DIALOG_HELSEFAGLIG",
        msg_id="0b7f3c1e-4d2a-4f7e-9a51-3c8d2e6b1f00",
        sender_her="7100201",
        receiver_her="7102001",
        state=MessageState.ACCEPTED,
        payload=b"<m/>",
        client="test",
        dedupe_key=None,
    )
    delivery = NewDelivery("7102001", "PRIM", "local", deadline_at=1e15, warn_at=1e15, expires_at=1e15)
    await store.add_message(message, [delivery], now=1_800_000_000.0)
    response = await client.get(f"/v1/messages/{'f' * 32}", headers=ADMIN)
    assert response.status == 200
    (shown,) = (await response.json())["deliveries"]
    assert shown["deadline_at"] is None and shown["expires_at"] is None


def test_iso_never_raises() -> None:
    assert iso(None) is None and iso(1e15) is None and iso(-1e15) is None and iso(float("inf")) is None
    assert iso(0.0) == "1970-01-01T00:00:00.000+00:00"

"""Handing received messages to the local EHR by folder and by callback (retried until the EHR says 2xx)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import PROJECT_ROOT
from gateway.registry import load_register
from gateway.store.base import DeliveryState, MessageState

from .region import ADMIN, fixture_bytes, region

EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # St. Olavs -> GP (7102001), copy Frøya (7100101)


async def test_folder_and_callback(tmp_path: Path) -> None:
    """The GP's EHR takes files from a folder; Frøya's EHR gets a POST, refused once, then taken."""
    calls: list[dict[str, str]] = []

    async def ehr(request: web.Request) -> web.Response:
        calls.append(dict(request.headers) | {"body": (await request.read()).decode("utf-8")})
        return web.Response(status=503 if len(calls) == 1 else 204)

    app = web.Application()
    app.router.add_post("/ehr", ehr)
    async with TestServer(app) as server:
        base = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
        gp, froya = base.get("7102001"), base.get("7100101")
        assert gp is not None and froya is not None
        register = base.replaced(
            [
                dataclasses.replace(gp, delivery="folder", folder=tmp_path / "gp-inbox"),
                dataclasses.replace(froya, delivery="callback", callback_url=str(server.make_url("/ehr"))),
            ]
        )
        async with region(tmp_path, hub_register=register, retry={"base_s": 0.01, "cap_s": 0.01}) as r:
            record, _ = await r.stolav.submit(fixture_bytes(EPIKRISE), ADMIN)
            await r.drain()
            r.clock.advance(1)
            await r.drain()
            [written] = list((tmp_path / "gp-inbox").glob("*.xml"))
            assert written.read_bytes() == fixture_bytes(EPIKRISE)
            assert len(calls) == 2 and calls[1]["body"].encode() == fixture_bytes(EPIKRISE)
            assert calls[1]["X-From-Her-Id"] == "7200101" and calls[1]["X-To-Her-Id"] == "7100101"
            page = await r.hub.store.list_messages(direction="in", kind="epikrise-1.2")
            assert {m.state for m in page.items} == {MessageState.DELIVERED}
            for message in page.items:
                view = await r.hub.store.get(message.id)
                assert view is not None and [d.state for d in view.deliveries] == [DeliveryState.DELIVERED]
            froya_view = await r.hub.store.get(next(m.id for m in page.items if m.receiver_her == "7100101"))
            assert froya_view is not None and froya_view.deliveries[0].attempts == 2
            # and both receivers answered St. Olavs
            view = await r.stolav.store.get(record.id)
            assert view is not None and {d.state for d in view.deliveries} == {DeliveryState.ACKNOWLEDGED}

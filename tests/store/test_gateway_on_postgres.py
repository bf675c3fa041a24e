"""The whole gateway on PostgreSQL (``[store] url = "postgresql://..."``): the hub of the test region accepts
an innleggelsesrapport, sends it and its copy, and settles both with the AppRecs that come back - with CMS on,
as in production - and a second hub process on the same database finds the same message when it comes again."""

from __future__ import annotations

from pathlib import Path

from gateway.store.base import DeliveryState, MessageState
from gateway.testing.postgres import PostgresServer

from ..region import ADMIN, fixture_bytes, region
from .conftest import new_database

INNLEGGELSE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"


async def test_the_hub_on_postgresql_delivers_and_settles(tmp_path: Path, postgres: PostgresServer) -> None:
    dsn = await new_database(postgres)
    async with region(tmp_path, protection="cms", hub_store=dsn) as r:
        assert r.hub.store.__class__.__name__ == "PostgresStore"
        record, created = await r.hub.submit(fixture_bytes(INNLEGGELSE), ADMIN)
        assert created
        await r.drain()
        view = await r.hub.store.get(record.id)
        assert view is not None and view.message.state == MessageState.ACKNOWLEDGED
        assert {d.receiver_her: d.state for d in view.deliveries} == {
            "7200101": DeliveryState.ACKNOWLEDGED,
            "7103001": DeliveryState.ACKNOWLEDGED,
        }
    async with region(tmp_path / "again", protection="cms", hub_store=dsn) as r:  # another process, same store
        again, created = await r.hub.submit(fixture_bytes(INNLEGGELSE), ADMIN)
        assert not created and again.id == record.id  # the duplicate is found across processes

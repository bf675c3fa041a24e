"""``gateway migrate-store``: a region's SQLite store moved into an empty PostgreSQL database - the first wave's
kept store (tests/data/store-wave1.sqlite) with every row and id, so that the PostgreSQL store reads the same
messages, deliveries, trace, routes and meta and goes on from there; a second run into the same database is
refused and doubles nothing."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.store.base import DeliveryState
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from gateway.testing.postgres import PostgresServer

from .conftest import new_database
from .test_contract import NOW, message, to

WAVE1 = Path(__file__).parent.parent / "data" / "store-wave1.sqlite"


async def test_a_first_wave_store_moves_with_every_row(
    tmp_path: Path, postgres: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(WAVE1, tmp_path / "gateway.sqlite")
    async with SqliteStore(tmp_path / "gateway.sqlite") as sqlite:  # (brought to today's schema, as a run would)
        await sqlite.add_message(message("added-today"), [to()], now=NOW)
        before = {m.id: m for m in (await sqlite.list_messages(limit=100)).items}
        views = {mid: await sqlite.get(mid) for mid in before}
        counts = await sqlite.counts()
    dsn = await new_database(postgres)
    code = await asyncio.to_thread(main, ["migrate-store", "--data-dir", str(tmp_path), "--to", dsn])
    assert code == 0
    out = capsys.readouterr().out
    assert "messages\t5" in out and "counts checked" in out
    async with PostgresStore(dsn) as moved:
        assert await moved.counts() == counts
        for mid, view in views.items():
            assert await moved.get(mid) == view  # the message, its deliveries and its trace, as they were
        assert [r.route for r in await moved.routes() if r.paused] == ["7300101"]
        assert await moved.get_meta("adapter:edi2:offset") == "42"
        [inbox] = await moved.inbox("7100102")
        assert inbox.id == "wave1-4-message"
        # and it goes on: a new delivery gets an id after the moved ones; the queued one is claimed
        record, _ = await moved.add_message(message("after-the-move"), [to("7300102")], now=NOW + 1)
        view = await moved.get(record.id)
        assert view is not None and view.deliveries[0].id > max(d.id for v in views.values() if v for d in v.deliveries)
        claims = await moved.claim_due(owner="w", now=NOW + 2, limit=10, lease_s=30)
        assert {c.message.id for c in claims} >= {record.id}
        assert all(c.delivery.state in (DeliveryState.QUEUED, DeliveryState.RETRYING) for c in claims)
    again_code = await asyncio.to_thread(main, ["migrate-store", "--data-dir", str(tmp_path), "--to", dsn])
    assert again_code == 2  # not into a filled database
    async with PostgresStore(dsn) as again:
        assert (await again.counts())["messages.queued"] == counts["messages.queued"] + 1  # nothing doubled

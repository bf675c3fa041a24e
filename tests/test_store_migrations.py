"""Schema versions of the SQLite store (gateway/store/sqlite_schema.py): a store the first wave's gateway wrote
(tests/data/store-wave1.sqlite, made by tests/data/make_store_wave1.py from that code) is brought to today's
schema in place with nothing lost and goes on working; a store of a newer schema is refused."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import StoreError
from gateway.store.base import DeliveryState, Refusal
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_schema import LATEST

WAVE1 = Path(__file__).parent / "data" / "store-wave1.sqlite"
TABLES = ("messages", "deliveries", "trace", "routes", "meta")


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in TABLES}  # noqa: S608


async def test_a_first_wave_store_upgrades_in_place_with_nothing_lost(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite"
    shutil.copy(WAVE1, path)
    before = _rows(path)
    async with SqliteStore(path) as store:
        assert store.schema == (0, LATEST)
        assert _rows(path) == before  # every row as it was
        view = await store.get("wave1-1-message")
        assert view is not None and [d.state for d in view.deliveries] == [DeliveryState.ACKNOWLEDGED]
        [waiting] = await store.inbox("7100102")
        assert waiting.id == "wave1-4-message"
        assert [(r.route, r.paused) for r in await store.routes() if r.paused] == [("7300101", True)]
        assert await store.get_meta("adapter:edi2:offset") == "42"
        # and it works as today's store: a table the first wave lacked, a retry, a new message
        await store.add_refusal(
            Refusal(1.0, "http", "security.unverified_packet", None, None, None, None, None, 1, "0" * 64, "a test"),
            keep=10,
        )
        assert len(await store.refusals()) == 1
        assert await store.retry("wave1-2-message", actor="test", now=2_000_000_000.0, ttl_s=3600.0) == 1
    async with SqliteStore(path) as again:
        assert again.schema == (LATEST, LATEST)


async def test_a_store_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite"
    async with SqliteStore(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {LATEST + 1}")
    store = SqliteStore(path)
    with pytest.raises(StoreError, match=f"version {LATEST + 1}, written by a newer gateway"):
        await store.open()
    with sqlite3.connect(path) as db:  # untouched
        assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST + 1


def test_gateway_migrate_says_what_it_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(WAVE1, tmp_path / "gateway.sqlite")
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    assert f"schema 0 -> {LATEST}" in capsys.readouterr().out
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    assert f"schema {LATEST}, nothing to do" in capsys.readouterr().out
    assert main(["migrate", "--data-dir", str(tmp_path / "none")]) == 2  # no store there: not made empty


def test_the_kept_store_names_no_person() -> None:
    """Synthetic content only: no 11-digit number (a national id's shape) anywhere in the file."""
    assert not re.search(rb"(?<!\d)\d{11}(?!\d)", WAVE1.read_bytes())

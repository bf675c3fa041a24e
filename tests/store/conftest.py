"""The store contract runs against every store (tests/store/test_contract.py): the SQLite file and PostgreSQL -
one throwaway server per session (gateway/testing/postgres.py), a database of its own per test. A missing
PostgreSQL is a failure, not a skip: `./dev test` installs it (Debian package postgresql)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from gateway.testing.postgres import PostgresServer, find_binaries

#: makes a store on the test's database - again and again, for a test that reopens it
StoreMaker = Callable[[], Store]


@pytest.fixture(scope="session", name="postgres")
def _postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    if find_binaries() is None:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): `./dev test` installs it")
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


async def new_database(server: PostgresServer) -> str:
    """A fresh database on ``server``; its DSN."""
    return await server.create_database()


@pytest.fixture(params=["sqlite", "postgres"], name="make_store")
async def _make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    if request.param == "sqlite":
        path = tmp_path / "gateway.sqlite"
        return lambda: SqliteStore(path)
    dsn = await new_database(request.getfixturevalue("postgres"))
    return lambda: PostgresStore(dsn)


@pytest.fixture(name="store")
async def _store(make_store: StoreMaker) -> AsyncIterator[Store]:
    async with make_store() as store:
        yield store

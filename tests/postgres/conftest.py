"""One throwaway PostgreSQL server for the PostgreSQL tests (gateway/testing/postgres.py), started once per
session. A missing PostgreSQL is a failure, not a skip: `./dev test` installs it (Debian package postgresql)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.testing.postgres import PostgresServer, find_binaries


@pytest.fixture(scope="session", name="postgres")
def _postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    if find_binaries() is None:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): `./dev test` installs it")
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server

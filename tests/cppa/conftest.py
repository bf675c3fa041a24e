"""Fixtures of the CPPA tests: NHN's CPP/CPA files from ../shared (skipped only outside CI when absent), a
client session, and a clock inside the test certificates' validity (2014-2017)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.clock import ManualClock
from gateway.testing.cppa_server import cppa_dir

from ..conftest import require_shared

#: inside the validity of every certificate of the Messaging and Registries CPP/CPA files but the v2 CPA's
WHEN = datetime(2016, 6, 1, 12, 0, tzinfo=UTC)


def shared_file(name: str) -> Path:
    return cppa_dir() / name


@pytest.fixture(autouse=True)
def _shared() -> None:
    require_shared()
    if not cppa_dir().is_dir():  # the same rule for the NHN files: skipped only outside CI
        if os.environ.get("CI"):
            pytest.fail(f"{cppa_dir()} is missing, and CI must run the CPPA tests")
        pytest.skip("../shared/standards/nhn/cppa is not beside this checkout")


@pytest.fixture(name="session")
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(name="clock")
def _clock() -> ManualClock:
    return ManualClock(WHEN.timestamp())

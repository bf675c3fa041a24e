"""``[store] url`` and the one factory that builds a store from it (gateway/store/factory.py)."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from gateway.config import Settings, StoreSettings, load_settings, redacted_url
from gateway.errors import ConfigError, StoreError
from gateway.store.factory import open_store, sqlite_path
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

from .region import settings_for


def _with(settings: Settings, url: str) -> Settings:
    return dataclasses.replace(settings, store=StoreSettings(url))


def test_the_default_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert settings.store.url == "sqlite:///gateway.sqlite"
    assert sqlite_path(settings) == tmp_path / "gateway.sqlite"
    assert sqlite_path(_with(settings, f"sqlite:///{tmp_path}/elsewhere.sqlite")) == tmp_path / "elsewhere.sqlite"
    assert isinstance(open_store(settings), SqliteStore)


async def test_a_tool_does_not_make_an_empty_store(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "gw")
    with pytest.raises(ConfigError, match="No store at"):
        open_store(settings, existing=True)
    async with open_store(settings) as store:
        await store.set_meta("k", "v")
    assert (tmp_path / "gw" / "gateway.sqlite").exists()
    async with open_store(settings, existing=True) as existing:
        assert await existing.get_meta("k") == "v"


async def test_a_postgresql_url_builds_the_postgresql_store_and_never_shows_its_password(tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nothing listens there once closed
    settings = _with(settings_for(tmp_path), f"postgresql://gateway:s3cret@127.0.0.1:{port}/sio")
    store = open_store(settings)
    assert isinstance(store, PostgresStore) and "s3cret" not in repr(store)
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert "gateway:***@127.0.0.1" in caught.value.message and "s3cret" not in caught.value.message


@pytest.mark.parametrize("url", ["gateway.sqlite", "mysql://db/x", "sqlite://", "sqlite:///"])
def test_a_url_the_store_cannot_be_built_from_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"\[store\] url"):
        StoreSettings(url)


def test_the_environment_names_the_store(tmp_path: Path) -> None:
    settings = load_settings(environ={"GATEWAY_STORE_URL": "sqlite:///other.sqlite"}, data_dir=tmp_path)
    assert sqlite_path(settings) == tmp_path / "other.sqlite"


def test_redacted_url() -> None:
    assert redacted_url("amqps://user:pw@sb.test.nhn.no:5671") == "amqps://user:***@sb.test.nhn.no:5671"
    assert redacted_url("postgresql://gateway@db/sio") == "postgresql://gateway@db/sio"
    assert redacted_url("sqlite:///gateway.sqlite") == "sqlite:///gateway.sqlite"

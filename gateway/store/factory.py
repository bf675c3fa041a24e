"""The one place a store is built from the settings (``[store] url``): the service and the command-line tools
ask here, and no other module names a store class.

- ``sqlite:///<path>``: the embedded store, one process (relative to the data dir; ``sqlite:////abs`` absolute);
- ``postgresql://<user>@<host>[:port]/<database>`` (or ``postgres://``): one database for several gateway
  processes (postgres.py). Its password, if the URL carries one, is never put in a log line or an error;
  PostgreSQL's own ``PGPASSFILE`` (``~/.pgpass``) keeps it out of the config altogether.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import Settings, redacted_url
from gateway.errors import ConfigError
from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

__all__ = ["open_store", "sqlite_path"]


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite file of ``[store] url``, or None when the store is not SQLite."""
    scheme, _, rest = settings.store.url.partition("://")
    if scheme != "sqlite":
        return None
    path = rest.removeprefix("/")  # sqlite:///relative, sqlite:////absolute
    return settings.in_data_dir(path)


def open_store(settings: Settings, *, existing: bool = False) -> Store:
    """The store ``[store] url`` names (not yet opened: use it as an async context manager). ``existing``:
    a tool that reads a gateway's store refuses to make an empty SQLite file (a PostgreSQL database is made
    by its operator, never by the gateway)."""
    path = sqlite_path(settings)
    if path is None:
        return PostgresStore(settings.store.url)
    if existing and not path.exists():
        raise ConfigError(f"No store at {path} ([store] url {redacted_url(settings.store.url)}).")
    return SqliteStore(path)

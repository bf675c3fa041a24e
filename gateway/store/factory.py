"""The one place a store is built from the settings (``[store] url``): the service and the command-line tools
ask here, and no other module names a store class.

``sqlite:///<path>`` is the embedded store (relative to the data dir; ``sqlite:////abs/path`` absolute).
``postgresql://`` is refused with a ConfigError that says so until the PostgreSQL store is built (issue 12);
a URL's password is never put in an error.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import Settings, redacted_url
from gateway.errors import ConfigError
from gateway.store.base import Store
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
    a tool that reads a gateway's store refuses to make an empty one."""
    path = sqlite_path(settings)
    if path is None:
        raise ConfigError(
            f"[store] url {redacted_url(settings.store.url)}: only SQLite stores (sqlite:///<file>) are "
            "built so far; the PostgreSQL store is not."
        )
    if existing and not path.exists():
        raise ConfigError(f"No store at {path} ([store] url {redacted_url(settings.store.url)}).")
    return SqliteStore(path)

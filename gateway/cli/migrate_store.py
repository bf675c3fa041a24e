"""``gateway migrate-store --from sqlite:///… --to postgresql://…``: move a region's data from its SQLite store into
an empty PostgreSQL database, with every gateway process stopped (gateway/store/transfer.py); then set
``[store] url`` to the PostgreSQL one and start the processes."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from gateway.config import StoreSettings, load_settings, redacted_url
from gateway.errors import ConfigError
from gateway.store.factory import sqlite_path
from gateway.store.transfer import transfer


def register(sub: Any) -> None:
    p = sub.add_parser("migrate-store", help="move a stopped region's SQLite store into an empty PostgreSQL database")
    p.add_argument("--from", dest="source", default="sqlite:///gateway.sqlite", help="the SQLite store's URL")
    p.add_argument("--to", dest="target", required=True, help="postgresql://<user>@<host>[:port]/<database>")
    p.add_argument("--config", type=Path)
    p.add_argument("--data-dir", type=Path, help="the data dir a relative sqlite:/// path is in")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, data_dir=args.data_dir)
    source = sqlite_path(dataclasses.replace(settings, store=StoreSettings(args.source)))
    if source is None:
        raise ConfigError(f"--from must be a sqlite:/// URL, not {redacted_url(args.source)}.")
    if sqlite_path(dataclasses.replace(settings, store=StoreSettings(args.target))) is not None:
        raise ConfigError("--to must be a postgresql:// URL.")
    moved = transfer(source, args.target)
    for table, rows in moved.items():
        print(f"{table}\t{rows}")
    print(f"moved {source} -> {redacted_url(args.target)}; counts checked. Now set [store] url to it.")
    return 0

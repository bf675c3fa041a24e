"""``gateway migrate``: bring a stopped gateway's store to this gateway's schema (opening the store does it
too; this says what it did, for an operator's upgrade procedure)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from gateway.config import load_settings, redacted_url
from gateway.store.factory import open_store


def register(sub: Any) -> None:
    p = sub.add_parser("migrate", help="bring the store's schema up to this gateway's version")
    p.add_argument("--config", type=Path)
    p.add_argument("--data-dir", type=Path, help="the data dir of the gateway whose store it is")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, data_dir=args.data_dir)
    found, now = asyncio.run(_migrate(settings))
    where = redacted_url(settings.store.url)
    print(f"{where}: schema {found} -> {now}" if found != now else f"{where}: schema {now}, nothing to do")
    return 0


async def _migrate(settings: Any) -> tuple[int, int]:
    async with open_store(settings, existing=True) as store:
        return await store.migrate()

"""``gateway parties``: the address register, one party a line (HER-id, name, kind, local|remote, adapter)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.config import load_settings
from gateway.registry import load_register


def register(sub: Any) -> None:
    p = sub.add_parser("parties", help="list the address register")
    p.add_argument("--config", type=Path)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    for party in load_register(settings.gateway.region):
        where = "local" if party.local else "remote"
        adapter = party.adapter if not party.local else f"ehr:{party.delivery}"
        print("\t".join([party.her_id, party.display, party.kind, where, adapter or "-"]))
    return 0

"""``gateway schemas``: every supported message kind and how it is checked with the configured bundle.

One kind a line, tab separated: name, family, version, AppRec version, check (official | envelope only |
none), namespace.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.config import load_settings
from gateway.core import build_validator


def register(sub: Any) -> None:
    p = sub.add_parser("schemas", help="the supported kinds and whether each is schema-checked")
    p.add_argument("--config", type=Path)
    p.add_argument("--schemas", type=Path, help="the official schema bundle (default: the config's)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    validator = build_validator(settings, register=None, bundle=args.schemas)
    unchecked = {k.name for k in validator.schemas.unchecked}
    bundle = validator.schemas.bundle
    for kind in validator.catalog.kinds:
        if kind.name not in unchecked:
            check = "official" if bundle else "own schema"
        else:
            check = "envelope only" if kind.family == "msghead" else "none"
        print("\t".join([kind.name, kind.family, kind.version, kind.apprec or "-", check, kind.namespace]))
    print(f"# bundle: {bundle or 'none configured'}")
    return 0

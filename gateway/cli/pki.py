"""``gateway pki``: the dev PKI, and what certificates the gateway holds.

gateway pki init [--config FILE] [--data-dir DIR] [--force]
    make the dev PKI of the configured region under <data-dir>/pki (test CA, CRL, a signing and an
    encryption certificate per party); existing files are kept unless --force
gateway pki list [--config FILE] [--data-dir DIR]
    every configured certificate, tab separated: HER-id, role, not-after, days left, subject, source

--config and --data-dir go before the action or after it: ``gateway pki --data-dir D list`` is the same.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.cli.options import Actions, option
from gateway.config import load_settings
from gateway.registry import load_register
from gateway.security.devpki import init_dev_pki
from gateway.security.protection import build_sign_then_encrypt

# before the action or after it (gateway/cli/options.py)
_SHARED = (
    option("--config", type=Path, help="the config file"),
    option("--data-dir", type=Path, help="the data directory"),
)


def register(sub: Any) -> None:
    p = sub.add_parser("pki", help="make the dev PKI; list certificates and their expiry")
    actions = Actions(p, _SHARED, dest="pki_action")
    init = actions.add("init", help="make the dev PKI for the configured region")
    init.add_argument("--force", action="store_true", help="make everything anew, even what exists")
    listing = actions.add("list", help="every configured certificate with its expiry")
    init.set_defaults(run=run_init)
    listing.set_defaults(run=run_list)


def run_init(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, data_dir=args.data_dir)
    region = load_register(settings.gateway.region)
    written = init_dev_pki(settings, region, force=args.force)
    pki_dir = settings.in_data_dir("pki")
    if not written:
        print(f"The dev PKI under {pki_dir} is complete; nothing to do (--force makes it anew).")
        return 0
    for path in written:
        print(path)
    print(f"Dev PKI for {len(region)} parties under {pki_dir}: {len(written)} files written.")
    return 0


def run_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, data_dir=args.data_dir)
    protection = build_sign_then_encrypt(settings, load_register(settings.gateway.region), private_keys_for=())
    now = datetime.now(UTC)
    for info in sorted(protection.certificates(), key=lambda i: i.not_after):
        days = (info.not_after - now).days
        print(f"{info.her_id or '-'}\t{info.role}\t{info.not_after:%Y-%m-%d}\t{days}\t{info.subject}\t{info.source}")
    return 0

"""``gateway validate``: judge message files the way a receiving gateway would.

One line per file on stdout, tab separated: ``path  ACCEPT|REJECT  code-or-dash  kind``; the reason for each
rejection on stderr. Exit 0 only if every file was accepted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.config import load_settings
from gateway.core import build_validator
from gateway.registry import load_register


def register(sub: Any) -> None:
    p = sub.add_parser("validate", help="judge message files (schemas + AppRec rules)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--schemas", type=Path, help="the official schema bundle (default: the config's)")
    p.add_argument("--config", type=Path, help="also check the receiver against this config's register (E21)")
    p.add_argument("--quiet", action="store_true", help="no reasons on stderr")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    register = load_register(settings.gateway.region) if args.config else None
    validator = build_validator(settings, register=register, bundle=args.schemas)
    all_ok = True
    for path in _expand(args.files):
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"{path}\tREJECT\t-\t-", flush=True)
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            all_ok = False
            continue
        judgement = validator.judge(data)
        kind = judgement.kind.name if judgement.kind else "-"
        if judgement.error is None:
            print(f"{path}\tACCEPT\t-\t{kind}")
            continue
        all_ok = False
        print(f"{path}\tREJECT\t{judgement.error.apprec_code or '-'}\t{kind}")
        if not args.quiet:
            print(f"{path}: {judgement.error.apprec_code}: {judgement.error.message}", file=sys.stderr)
    return 0 if all_ok else 1


def _expand(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for every .xml file below it, in name order."""
    found: list[Path] = []
    for path in paths:
        found.extend(sorted(path.rglob("*.xml")) if path.is_dir() else [path])
    return found

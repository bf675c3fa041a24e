"""``gateway replay [DIR]``: the fixtures through a simulated SiO region on loopback - by default this hub
beside a local NHN whose scripted peers play St. Olavs (``--via nhn``), or this hub and a simulated St.
Olavs gateway over http (``--via http``).

Prints one row per fixture and receiver - fixture, kind, from -> to, what the sender's gateway said, what the
receiver answered (AppRec outcome), expected, ✓/✗ - and the AppRec round-trip latency. Exit 0 only if
every fixture reached its expected end state.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.config import PROJECT_ROOT, load_settings
from gateway.log import configure
from gateway.registry import load_register
from gateway.replay import VIAS, Outcome, latency_summary, replay


def register(sub: Any) -> None:
    p = sub.add_parser("replay", help="replay the fixtures through a simulated SiO region")
    p.add_argument("dir", nargs="?", type=Path, default=PROJECT_ROOT / "fixtures" / "messages")
    p.add_argument("--config", type=Path, help="config whose register and schemas to use")
    p.add_argument(
        "--via",
        choices=VIAS,
        default="nhn",
        help="how St. Olavs is reached: through a local NHN (edi2, as the region runs now) or a simulated "
        "St. Olavs gateway over http (default: %(default)s)",
    )
    p.add_argument("--work-dir", type=Path, help="keep the region's data and logs here (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for AppRecs (default: %(default)s)")
    p.add_argument("--no-cms", action="store_true", help="send unprotected between gateways (debugging only)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    configure(fmt="auto", level="warning", stream=sys.stderr)  # the harness's own lines: only trouble, not stdout
    settings = load_settings(args.config)
    register = load_register(settings.gateway.region)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gateway-replay-"))
    try:
        outcomes = replay(
            args.dir,
            settings,
            register,
            work,
            via=args.via,
            timeout_s=args.timeout,
            protection="none" if args.no_cms else "cms",
        )
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(outcomes)
    return 0 if outcomes and all(o.ok for o in outcomes) else 1


def print_table(outcomes: list[Outcome]) -> None:
    rows = [("fixture", "kind", "from -> to", "sender's gateway", "receiver answered", "expected", "")]
    for o in outcomes:
        mark = "✓" if o.ok else "✗"
        for i, receiver in enumerate(o.receivers):
            said = o.receivers_said.get(receiver, o.note or "-")
            rows.append(
                (
                    o.fixture if i == 0 else "",
                    o.kind if i == 0 else "",
                    f"{o.sender} -> {receiver}",
                    o.submitted,
                    said,
                    o.expected if i == 0 else "",
                    mark if i == 0 else "",
                )
            )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    latency = latency_summary(outcomes)
    passed = sum(o.ok for o in outcomes)
    print(f"\n{passed}/{len(outcomes)} fixtures reached their expected end state.")
    if latency:
        print(f"AppRec round trip: median {latency[0] * 1000:.0f} ms, p99 {latency[1] * 1000:.0f} ms")

"""The ``gateway`` command: one sub-command a module, each registering its own arguments.

gateway serve      run the gateway (API, transports, delivery, scheduler)
gateway validate   judge message files against the schemas and the AppRec rules
gateway parties    list the address register
gateway submit / status     talk to a running gateway's API
gateway replay     replay the fixtures through a simulated SiO region
gateway queue      see and steer the delivery queue
gateway pki        make the dev PKI
gateway protect / unprotect  CMS sign+encrypt / decrypt+verify on stdin/stdout
gateway bus        dead letters on Helsenorge's Tjenestebuss: list them, put them back
gateway migrate    bring a stopped gateway's store to this gateway's schema
gateway migrate-store  move a stopped region's SQLite store into PostgreSQL
gateway sim        run a local simulator of a national service (nhn: NHN's Meldingstjener, EDI peers, HelseID)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import (
    bus,
    client,
    migrate,
    migrate_store,
    parties,
    pki,
    protect,
    queue,
    replay,
    schemas,
    serve,
    sim,
    validate,
)
from gateway.errors import GatewayError

__all__ = ["main"]

_COMMANDS = [serve, validate, schemas, parties, client, queue, bus, replay, pki, protect, sim, migrate, migrate_store]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="SiO e-meldingsgateway")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except GatewayError as exc:
        print(f"gateway: {exc.event}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `gateway ... | head`: the reader has what it wanted
        sys.stderr.close()
        return 0
    return code

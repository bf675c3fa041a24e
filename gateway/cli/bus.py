"""``gateway bus``: a party's dead letters on Helsenorge's Tjenestebuss (``<her>_dl``), with the
``[adapters.amqp]`` settings of the gateway's config (docs/transports.md).

    gateway bus dead-letters HER [--config C]          list them (no bodies): id, queue, from, to, subject, time
    gateway bus requeue HER (--id ID ... | --all)      put them back on the queue they died on

Seeing them does not change them; a re-queued message is the same message (its id, fields and body) again
on its queue, and is taken off ``_dl`` only once the broker has accepted it there.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from adapters.amqp.dead_letters import DeadLetter, dead_letters, requeue
from adapters.amqp.settings import AmqpSettings
from gateway.cli.options import Actions, option
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.registry import is_her_id

_SHARED = (
    option(
        "--config", type=Path, help="the gateway's config, whose [adapters.amqp] is used (default: config/gateway.toml)"
    ),
    option("--limit", type=int, default=1000, help="at most this many dead letters (default: %(default)s)"),
)


def register(sub: Any) -> None:
    p = sub.add_parser("bus", help="dead letters on Helsenorge's Tjenestebuss (AMQP)")
    actions = Actions(p, _SHARED)
    actions.add("dead-letters", help="list a party's dead letters").add_argument("her", help="the party's HER-id")
    again = actions.add("requeue", help="put dead letters back on the queue they died on")
    again.add_argument("her", help="the party's HER-id")
    again.add_argument("--id", action="append", dest="ids", help="a message-id (again for more)")
    again.add_argument("--all", action="store_true", help="every dead letter of the party")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not is_her_id(args.her):
        raise SystemExit("gateway bus: HER must be a HER-id (1 to 12 digits)")
    if args.action == "requeue" and bool(args.ids) == bool(args.all):
        raise SystemExit("gateway bus requeue: give --id ID (one or more) or --all")
    options = load_settings(args.config).adapters.get("amqp")
    if not options:
        raise ConfigError("The config has no [adapters.amqp].")
    settings = AmqpSettings.from_options(options)
    if args.action == "dead-letters":
        letters = asyncio.run(dead_letters(settings, args.her, limit=args.limit))
        _print(letters)
        print(f"{len(letters)} dead letter(s) in {args.her}_dl")
    else:
        moved = asyncio.run(requeue(settings, args.her, None if args.all else args.ids, limit=args.limit))
        _print(moved)
        print(f"{len(moved)} re-queued")
    return 0


def _print(letters: list[DeadLetter]) -> None:
    for d in letters:
        print(
            f"{d.message_id}\t{d.queue}\t{d.from_her}->{d.to_her}\t{d.subject}\t{d.application_timestamp}\t{d.size} B"
        )

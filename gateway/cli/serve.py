"""``gateway serve``: run the gateway until SIGTERM or Ctrl-C, then shut down gracefully.

On SIGTERM the worker stops claiming, in-flight sends get ``delivery.shutdown_grace_s`` to finish, leases
are released, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.api.app import create_app
from gateway.api.server import app_runner
from gateway.config import Settings, load_settings
from gateway.log import configure, get_logger
from gateway.service import Gateway

log = get_logger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", type=Path, help="config file (default: config/gateway.toml)")
    p.add_argument("--data-dir", type=Path, help="where the store, PKI and dev token live (default: var/)")
    p.add_argument("--host", help="listen address (default: the config's, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: the config's, 8080)")
    p.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config, data_dir=args.data_dir)
    api = settings.api
    if args.host:
        api = dataclasses.replace(api, host=args.host)
    if args.port is not None:
        api = dataclasses.replace(api, port=args.port)
    return dataclasses.replace(settings, api=api)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    configure(fmt=settings.log.format, level=settings.log.level)
    return asyncio.run(serve(settings))


def _announce(settings: Settings) -> Any:
    def say(token: str) -> None:
        where = settings.data_dir / "dev-token"
        if token:
            print(f"gateway: made a dev API token (every local party, admin): {token}", file=sys.stderr)
        print(f"gateway: dev API token in {where}", file=sys.stderr)

    return say


async def until_signalled() -> None:
    """Return on the first SIGTERM or SIGINT (a supervisor's stop, Ctrl-C): the caller then shuts down."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(settings: Settings) -> int:
    gateway = Gateway(settings)
    app = create_app(gateway, announce=_announce(settings))
    runner = app_runner(app)  # the [limits] on headers and idle connections, JSON for bad HTTP
    await runner.setup()
    site = web.TCPSite(runner, settings.api.host, settings.api.port)
    await site.start()
    print(
        f"gateway: {settings.gateway.name} listening on http://{settings.api.host}:{settings.api.port}",
        file=sys.stderr,
        flush=True,
    )
    await until_signalled()
    log.info("gateway.stopping", reason="signal")
    await runner.cleanup()
    return 0

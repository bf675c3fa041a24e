"""``gateway submit`` and ``gateway status``: talk to a running gateway's API."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp


def register(sub: Any) -> None:
    p = sub.add_parser("submit", help="hand a message file to a running gateway")
    p.add_argument("file", type=Path)
    _common(p)
    p.set_defaults(run=run_submit)
    p = sub.add_parser("status", help="a message's state, deliveries and trace")
    p.add_argument("id")
    _common(p)
    p.set_defaults(run=run_status)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway (default: %(default)s)")
    p.add_argument("--token", help="API token (default: the dev token in --data-dir)")
    p.add_argument("--data-dir", type=Path, default=Path("var"), help="where to find the dev token")


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    path: Path = args.data_dir / "dev-token"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        raise SystemExit(f"gateway: no --token given and no dev token in {path}") from None


async def _call(method: str, url: str, token: str, body: bytes | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/xml"}
    async with aiohttp.ClientSession() as session, session.request(method, url, data=body, headers=headers) as resp:
        raw = await resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, {"raw": raw.decode("utf-8", "replace")}


def run_submit(args: argparse.Namespace) -> int:
    status, data = asyncio.run(_call("POST", f"{args.url}/v1/messages", _token(args), args.file.read_bytes()))
    print(json.dumps(data, indent=2, ensure_ascii=False))
    if status >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        print(f"gateway: refused ({status}): {error.get('code') or '-'} {error.get('event')}", file=sys.stderr)
        return 1
    return 0


def run_status(args: argparse.Namespace) -> int:
    status, data = asyncio.run(_call("GET", f"{args.url}/v1/messages/{args.id}", _token(args)))
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0 if status < 400 else 1

"""``gateway queue``: see and steer the delivery queue.

Against a running gateway's admin API (``--url URL --token T``; admin tokens only), or directly on the
store of a stopped gateway (``--data-dir D``). Every action is recorded in the trace with who did it. These
options go before the action or after it: ``gateway queue --data-dir D list`` = ``gateway queue list --data-dir D``.

    gateway queue list [--state S] [--route HER] [--since 2h|ISO]
    gateway queue show ID
    gateway queue retry ID            gateway queue retry --dead [--route HER]
    gateway queue cancel ID
    gateway queue pause HER           gateway queue resume HER
    gateway queue routes
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from gateway.api.views import message_json, view_json
from gateway.cli.options import Actions, option
from gateway.config import load_settings
from gateway.errors import BadRequest, ConfigError, GatewayError, NotFound
from gateway.retry import ttls
from gateway.store.factory import open_store

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# before the action or after it (gateway/cli/options.py)
_SHARED = (
    option("--url", help="a running gateway (with --token)"),
    option("--token", help="an admin API token"),
    option("--data-dir", type=Path, help="work directly on a stopped gateway's store"),
    option("--config", type=Path, help="with --data-dir: the config whose retry settings apply"),
)


def register(sub: Any) -> None:
    p = sub.add_parser("queue", help="see and steer the delivery queue")
    actions = Actions(p, _SHARED)
    listing = actions.add("list", help="messages, newest first")
    listing.add_argument("--state")
    listing.add_argument("--route", help="receiver HER-id")
    listing.add_argument("--since", help="e.g. 2h, 30m, 1d or an ISO time")
    listing.add_argument("--limit", type=int, default=100)
    actions.add("show", help="one message with its deliveries and trace").add_argument("id")
    retry = actions.add("retry", help="send again now (a message, or every dead one)")
    retry.add_argument("id", nargs="?")
    retry.add_argument("--dead", action="store_true", help="every dead delivery")
    retry.add_argument("--route", help="with --dead: only this receiver HER-id")
    actions.add("cancel", help="stop sending a message").add_argument("id")
    actions.add("pause", help="hold a route (receiver HER-id)").add_argument("route")
    actions.add("resume", help="release a held route").add_argument("route")
    actions.add("routes", help="routes with their queue, pause and circuit state")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.url) == bool(args.data_dir):
        raise SystemExit("gateway queue: give either --url URL --token T (running) or --data-dir D (stopped)")
    if args.action == "retry" and not (args.id or args.dead):
        raise SystemExit("gateway queue retry: give a message id, or --dead")
    operate = _via_api if args.url else _direct
    result = asyncio.run(operate(args))
    _print(args.action, result)
    return 0


def _since(value: str | None) -> float | None:
    if not value:
        return None
    match = _RELATIVE.match(value)
    if match:
        return time.time() - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"--since {value!r}: give 2h, 30m, 1d or an ISO time.") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()  # no zone given: UTC


async def _via_api(args: argparse.Namespace) -> Any:
    if not args.token:
        raise SystemExit("gateway queue: --url needs --token (an admin token)")
    base = args.url.rstrip("/") + "/v1/admin"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {args.token}"}) as session:

        async def call(method: str, path: str, **params: Any) -> Any:
            query = {k: str(v) for k, v in params.items() if v is not None}
            async with session.request(method, base + path, params=query) as response:
                body = await response.json()
                if response.status >= 400:
                    error = body.get("error", {})
                    raise SystemExit(f"gateway queue: {response.status} {error.get('event')}: {error.get('message')}")
                return body

        actions: dict[str, Callable[[], Awaitable[Any]]] = {
            "list": lambda: call(
                "GET", "/queue", state=args.state, route=args.route, limit=args.limit, since=_iso(_since(args.since))
            ),
            "show": lambda: call("GET", f"/messages/{args.id}"),
            "retry": lambda: (
                call("POST", "/retry-dead", route=args.route)
                if args.dead
                else call("POST", f"/messages/{args.id}/retry")
            ),
            "cancel": lambda: call("POST", f"/messages/{args.id}/cancel"),
            "pause": lambda: call("POST", f"/routes/{args.route}/pause"),
            "resume": lambda: call("POST", f"/routes/{args.route}/resume"),
            "routes": lambda: call("GET", "/routes"),
        }
        return await actions[args.action]()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


async def _direct(args: argparse.Namespace) -> Any:
    settings = load_settings(args.config, data_dir=args.data_dir)
    try:
        store = open_store(settings, existing=True)
    except ConfigError as exc:
        raise SystemExit(f"gateway queue: {exc.message}") from None
    actor = f"cli:{getpass.getuser()}"
    now = time.time()
    ttl = ttls(settings.retry)
    async with store:
        try:
            if args.action == "list":
                page = await store.list_messages(
                    state=args.state, route=args.route, since=_since(args.since), limit=args.limit
                )
                return {"items": [message_json(m) for m in page.items]}
            if args.action == "show":
                view = await store.get(args.id)
                if view is None:
                    raise NotFound(f"No message {args.id}.")
                return view_json(view)
            if args.action == "retry":
                if args.dead:
                    return {"requeued": await store.retry_dead(route=args.route, actor=actor, now=now, ttl_s=ttl)}
                return {"requeued": await store.retry(args.id, actor=actor, now=now, ttl_s=ttl)}
            if args.action == "cancel":
                return {"cancelled": await store.cancel(args.id, actor=actor, now=now)}
            if args.action in ("pause", "resume"):
                await getattr(store, args.action)(args.route, actor=actor, now=now)
                return {"route": args.route, "paused": args.action == "pause"}
            counts = await store.queue_counts()
            paused = {r.route: r for r in await store.routes()}
            return {
                "items": [
                    {"route": r, "paused": bool(paused.get(r) and paused[r].paused), "deliveries": counts.get(r, {})}
                    for r in sorted(set(counts) | set(paused))
                ]
            }
        except GatewayError as exc:
            raise SystemExit(f"gateway queue: {exc.event}: {exc.message}") from None


def _print(action: str, result: Any) -> None:
    if action == "list":
        for m in result["items"]:
            print(
                "\t".join(
                    str(m.get(k) or "-")
                    for k in ("id", "direction", "kind", "state", "sender", "receiver", "created_at")
                )
            )
    elif action == "routes":
        for r in result["items"]:
            waiting = ", ".join(f"{state} {n}" for state, n in sorted(r["deliveries"].items()))
            flags = ("paused " if r["paused"] else "") + r.get("circuit", "")
            print(f"{r['route']}\t{flags.strip() or '-'}\t{waiting or '-'}")
    elif action == "show":
        _show(result)
    else:
        print(json.dumps(result, ensure_ascii=False))


def _show(view: dict[str, Any]) -> None:
    print(
        f"{view['id']}  {view['direction']}  {view['kind']}  {view['state']}  "
        f"{view['sender']} -> {view['receiver']}  MsgId {view['msg_id']}"
    )
    if view.get("error"):
        print(
            f"  error: {view['error'].get('code') or '-'} {view['error'].get('event')}: {view['error'].get('message')}"
        )
    for d in view["deliveries"]:
        apprec = d["apprec"]
        said = f"  AppRec {apprec['status']}" if apprec else ""
        error = f"  last error: {d['last_error']['code']}: {d['last_error']['message']}" if d["last_error"] else ""
        print(
            f"  delivery {d['id']} -> {d['receiver']} ({d['role']}, {d['channel']}): {d['state']}, "
            f"attempt {d['attempts']}, next {d['next_attempt_at'] or '-'}{said}{error}"
        )
    print("  trace:")
    for t in view["trace"]:
        who = f" by {t['actor']}" if t.get("actor") else ""
        attempt = f" #{t['attempt']}" if t.get("attempt") else ""
        print(f"    {t['at']}  {t['event']}{attempt}  [{t['state']}]  {t['reason']}{who}", file=sys.stdout)

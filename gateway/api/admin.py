"""``/v1/admin``: see and steer the queue (admin tokens only; the dev token is one).

Every action is recorded in the trace of each message it touches, with the client's name as the actor.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

from aiohttp import web

from gateway.api.keys import GATEWAY, client_of
from gateway.api.messages import cursor, page_limit
from gateway.api.views import iso, message_json, view_json
from gateway.errors import BadRequest, Forbidden, NotFound
from gateway.pipeline.outbound import Client
from gateway.registry import is_her_id
from gateway.retry import ttls

__all__ = ["routes"]

routes = web.RouteTableDef()

#: A route is a receiver HER-id: digits only, as the register writes them.


def admin_of(request: web.Request) -> Client:
    client = client_of(request)
    if not client.admin:
        raise Forbidden(f"Client {client.name} has no admin rights.")
    return client


def route_of(value: str) -> str:
    """A route name from the path or a query parameter; anything but a HER-id is refused unrepeated."""
    if not is_her_id(value):
        raise BadRequest("A route is a receiver HER-id: 1 to 12 digits.")
    return value


def _route_filter(value: str | None) -> str | None:
    return route_of(value) if value else None


def _since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest("since must be an ISO 8601 time, e.g. 2026-11-22T08:00:00+00:00.") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()  # no zone given: UTC


@routes.get("/v1/admin/queue")
async def queue(request: web.Request) -> web.Response:
    admin_of(request)
    q = request.query
    page = await request.app[GATEWAY].store.list_messages(
        state=q.get("state") or None,
        route=_route_filter(q.get("route")),
        direction=q.get("direction") or None,
        kind=q.get("kind") or None,
        since=_since(q.get("since")),
        limit=page_limit(q.get("limit"), default=100, most=1000),
        cursor=cursor(q.get("cursor")),
    )
    return web.json_response({"items": [message_json(m) for m in page.items], "next_cursor": page.next_cursor})


@routes.get("/v1/admin/messages/{id}")
async def show(request: web.Request) -> web.Response:
    admin_of(request)
    view = await request.app[GATEWAY].store.get(request.match_info["id"])
    if view is None:
        raise NotFound(f"No message {request.match_info['id']}.")
    return web.json_response(view_json(view))


@routes.post("/v1/admin/messages/{id}/retry")
async def retry(request: web.Request) -> web.Response:
    client = admin_of(request)
    gateway = request.app[GATEWAY]
    count = await gateway.store.retry(
        request.match_info["id"], actor=client.name, now=gateway.clock.now(), ttl_s=ttls(gateway.settings.retry)
    )
    gateway.worker.notify()
    return web.json_response({"id": request.match_info["id"], "requeued": count})


@routes.post("/v1/admin/retry-dead")
async def retry_dead(request: web.Request) -> web.Response:
    client = admin_of(request)
    gateway = request.app[GATEWAY]
    route = _route_filter(request.query.get("route"))
    count = await gateway.store.retry_dead(
        route=route, actor=client.name, now=gateway.clock.now(), ttl_s=ttls(gateway.settings.retry)
    )
    gateway.worker.notify()
    return web.json_response({"route": route, "requeued": count})


@routes.post("/v1/admin/messages/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    client = admin_of(request)
    gateway = request.app[GATEWAY]
    count = await gateway.store.cancel(request.match_info["id"], actor=client.name, now=gateway.clock.now())
    return web.json_response({"id": request.match_info["id"], "cancelled": count})


@routes.post("/v1/admin/routes/{route}/pause")
async def pause(request: web.Request) -> web.Response:
    client = admin_of(request)
    route = route_of(request.match_info["route"])
    gateway = request.app[GATEWAY]
    await gateway.store.pause(route, actor=client.name, now=gateway.clock.now())
    return web.json_response({"route": route, "paused": True})


@routes.post("/v1/admin/routes/{route}/resume")
async def resume(request: web.Request) -> web.Response:
    client = admin_of(request)
    route = route_of(request.match_info["route"])
    gateway = request.app[GATEWAY]
    await gateway.store.resume(route, actor=client.name, now=gateway.clock.now())
    gateway.worker.notify()
    return web.json_response({"route": route, "paused": False})


@routes.get("/v1/admin/routes")
async def route_list(request: web.Request) -> web.Response:
    admin_of(request)
    gateway = request.app[GATEWAY]
    counts = await gateway.store.queue_counts()
    states = {r.route: r for r in await gateway.store.routes()}
    breaker = gateway.worker.breaker
    items = []
    for route in sorted(set(counts) | set(states)):
        health = breaker.routes.get(route)
        circuit = "open" if breaker.is_open(route) else ("probing" if health and health.down_since else "closed")
        items.append(
            {
                "route": route,
                "paused": bool(states.get(route) and states[route].paused),
                "paused_by": states[route].paused_by if route in states else None,
                "circuit": circuit,
                "down_since": iso(health.down_since) if health else None,
                "consecutive_failures": health.failures if health else 0,
                "deliveries": counts.get(route, {}),
            }
        )
    return web.json_response({"items": items})


_REFUSAL_ID = re.compile(r"[0-9]{1,18}")


@routes.get("/v1/admin/refusals")
async def refusals(request: web.Request) -> web.Response:
    """Packets refused at the transport, newest first: metadata, the cause and a digest - never the bytes."""
    admin_of(request)
    limit = page_limit(request.query.get("limit"), default=100, most=1000)
    before = request.query.get("before")
    if before is not None and not _REFUSAL_ID.fullmatch(before):  # (not isdigit: "²" is a digit to Python)
        raise BadRequest("before must be the id of a refusal (a whole number).")
    found = await request.app[GATEWAY].store.refusals(limit=limit, before=int(before) if before else None)
    items = [{**dataclasses.asdict(r), "at": iso(r.at)} for r in found]
    return web.json_response({"items": items, "next_before": found[-1].id if len(found) == limit else None})

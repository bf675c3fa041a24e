"""``/v1/messages``: hand a message in, follow it, fetch its document (``/healthz`` is in health.py)."""

from __future__ import annotations

from aiohttp import web

from gateway.api.auth import may_see
from gateway.api.keys import GATEWAY, client_of
from gateway.api.views import message_json, summary_json, view_json
from gateway.errors import BadRequest, NotFound

__all__ = ["routes"]

routes = web.RouteTableDef()


def page_limit(value: str | None, *, default: int, most: int) -> int:
    """A page size from a query parameter: a whole number from 1 to ``most``."""
    try:
        limit = int(value) if value else default
    except ValueError:
        raise BadRequest("limit must be a whole number.") from None
    if not 1 <= limit <= most:
        raise BadRequest(f"limit must be between 1 and {most}.")
    return limit


def cursor(value: str | None) -> str | None:
    """A paging cursor as the previous page gave it (``<time>:<id>``); anything else is refused."""
    if not value:
        return None
    at, sep, last = value.partition(":")
    try:
        float(at)
    except ValueError:
        sep = ""
    if not sep or not last.isalnum():
        raise BadRequest("cursor must be the next_cursor of the previous page.")
    return value


@routes.post("/v1/messages")
async def submit(request: web.Request) -> web.Response:
    client = client_of(request)
    body = await request.read()
    if not body:
        raise BadRequest("POST the KITH XML message as the request body.")
    record, created = await request.app[GATEWAY].submit(body, client)
    return web.json_response(
        summary_json(record), status=202 if created else 200, headers={"Location": f"/v1/messages/{record.id}"}
    )


@routes.get("/v1/messages/{id}")
async def status(request: web.Request) -> web.Response:
    client = client_of(request)
    view = await request.app[GATEWAY].store.get(request.match_info["id"])
    if view is None or not may_see(client, view.message):
        raise NotFound(f"No message {request.match_info['id']}.")
    return web.json_response(view_json(view))


@routes.get("/v1/messages")
async def listing(request: web.Request) -> web.Response:
    client = client_of(request)
    q = request.query
    limit = page_limit(q.get("limit"), default=50, most=500)
    page = await request.app[GATEWAY].store.list_messages(
        state=q.get("state") or None,
        kind=q.get("kind") or None,
        direction=q.get("direction") or None,
        route=q.get("route") or None,
        limit=limit,
        cursor=cursor(q.get("cursor")),
        parties=None if client.admin or client.senders is None else sorted(client.senders),
    )
    items = [message_json(m) for m in page.items]
    return web.json_response({"items": items, "next_cursor": page.next_cursor})


@routes.get("/v1/messages/{id}/document")
async def document(request: web.Request) -> web.Response:
    client = client_of(request)
    gateway = request.app[GATEWAY]
    view = await gateway.store.get(request.match_info["id"])
    if view is None or not may_see(client, view.message):
        raise NotFound(f"No message {request.match_info['id']}.")
    payload = await gateway.store.payload(view.message.id)
    if payload is None:
        raise NotFound(f"The document of message {view.message.id} has been pruned after the retention period.")
    return web.Response(body=payload, content_type="application/xml")

"""``/v1/inbox``: the local EHR pulls what it received, acknowledges it, and - where the EHR decides
receipts - says what the AppRec is to be."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.api.auth import may_see, require_party
from gateway.api.keys import GATEWAY, client_of
from gateway.api.views import message_json
from gateway.errors import BadRequest, NotFound
from gateway.model.apprec import ERROR_TEXTS, AppRecError
from gateway.registry import is_her_id

__all__ = ["routes"]

routes = web.RouteTableDef()

#: An AppRec verdict is a few hundred bytes; the body of one is refused past this.
MAX_APPREC_BYTES = 64 * 1024
MAX_APPREC_ERRORS = 100


@routes.get("/v1/inbox")
async def inbox(request: web.Request) -> web.Response:
    client = client_of(request)
    receiver = request.query.get("receiver", "")
    if not is_her_id(receiver):
        raise BadRequest("Say whose inbox: /v1/inbox?receiver=<HER-id> (1 to 12 digits).")
    require_party(client, receiver)
    items = await request.app[GATEWAY].store.inbox(receiver)
    return web.json_response({"items": [message_json(m) for m in items]})


async def _received(request: web.Request) -> tuple[Any, Any]:
    client = client_of(request)
    view = await request.app[GATEWAY].store.get(request.match_info["id"])
    if view is None or str(view.message.direction) != "in" or not may_see(client, view.message):
        raise NotFound(f"No received message {request.match_info['id']}.")
    require_party(client, view.message.receiver_her or "")
    return client, view


@routes.get("/v1/inbox/{id}/document")
async def document(request: web.Request) -> web.Response:
    _client, view = await _received(request)
    payload = await request.app[GATEWAY].store.payload(view.message.id)
    if payload is None:
        raise NotFound(f"The document of message {view.message.id} has been pruned.")
    return web.Response(body=payload, content_type="application/xml")


@routes.post("/v1/inbox/{id}/ack")
async def ack(request: web.Request) -> web.Response:
    client, view = await _received(request)
    gateway = request.app[GATEWAY]
    first = await gateway.store.ack_inbox(view.message.id, actor=client.name, now=gateway.clock.now())
    return web.json_response({"id": view.message.id, "state": "delivered", "already": not first})


@routes.post("/v1/inbox/{id}/apprec")
async def apprec(request: web.Request) -> web.Response:
    """``{"status": 1|2|3, "errors": [{"code": "E35", "text": "..."}]}``: the EHR's verdict."""
    client, view = await _received(request)
    raw = await request.read()
    if len(raw) > MAX_APPREC_BYTES:
        raise BadRequest(f"An AppRec verdict is at most {MAX_APPREC_BYTES} bytes of JSON.")
    try:
        body = json.loads(raw or b"{}")
        status = str(body["status"])
        errors = tuple(AppRecError(str(e["code"]).upper(), str(e.get("text", ""))) for e in body.get("errors", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BadRequest('Send {"status": 1|2|3, "errors": [{"code": "E35", "text": "..."}]}.') from None
    if status not in ("1", "2", "3"):
        raise BadRequest("status must be 1 (OK), 2 (Avvist) or 3 (OK, feil i delmelding).")
    if status != "1" and not errors:
        raise BadRequest(f"An AppRec with status {status} needs at least one error.")
    if len(errors) > MAX_APPREC_ERRORS:
        raise BadRequest(f"An AppRec carries at most {MAX_APPREC_ERRORS} errors.")
    unknown = [e.code[:8] for e in errors if e.code not in ERROR_TEXTS]
    if unknown:
        raise BadRequest(f"Unknown AppRec error code(s) {', '.join(unknown[:5])} (code system 8221).")
    gateway = request.app[GATEWAY]
    apprec_id = await gateway.receipts.ehr_decides(view.message.id, status=status, errors=errors, actor=client.name)
    gateway.worker.notify()
    return web.json_response({"id": view.message.id, "apprec": apprec_id, "status": status}, status=202)

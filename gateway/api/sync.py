"""``POST /v1/sync``: a synchronous request (Helsenorge's request/reply) - the EHR posts the KITH XML and
the response is the receiver's reply, verified and judged, as XML; nothing is queued or stored.

``?timeout_s=`` shortens the wait (at most, and by default, 15 s: Helsenorge.Messaging's call timeout).
Errors are the API's JSON: 422 for a message refused here or a receiver with no request/reply, 502 when
the receiver refused it (its transport condition in the words) or its reply is not acceptable, 504 when no
reply came in time.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.keys import GATEWAY, client_of
from gateway.errors import BadRequest
from gateway.pipeline.sync import SYNC_TIMEOUT_S, header_safe

__all__ = ["routes"]

routes = web.RouteTableDef()


def _timeout(value: str | None) -> float:
    if not value:
        return SYNC_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        raise BadRequest("timeout_s must be a number of seconds.") from None
    if not 0.0 < seconds <= SYNC_TIMEOUT_S:
        raise BadRequest(f"timeout_s must be more than 0 and at most {SYNC_TIMEOUT_S:g}.")
    return seconds


@routes.post("/v1/sync")
async def request(request: web.Request) -> web.Response:
    client = client_of(request)
    timeout_s = _timeout(request.query.get("timeout_s"))
    body = await request.read()
    if not body:
        raise BadRequest("POST the KITH XML request as the request body.")
    reply = await request.app[GATEWAY].request(body, client, timeout_s=timeout_s)
    headers = header_safe(
        {
            "X-Msg-Id": reply.msg_id,
            "X-Kind": reply.kind,
            "X-From-Her-Id": reply.from_her,
            "X-Request-Msg-Id": reply.request_msg_id,
        }
    )
    return web.Response(body=reply.content, content_type="application/xml", headers=headers)

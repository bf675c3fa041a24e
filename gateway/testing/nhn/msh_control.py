"""The simulator's own control API, ``/_sim/…``: faults, the clock, the peers - for a test that runs the
simulator in another process (``gateway sim nhn``). It is no part of NHN's API and takes no credentials.

    POST   /_sim/faults                      arm faults (the JSON of ``Faults.arm``); DELETE clears them
    POST   /_sim/advance                     {"seconds": s}: move the clock on, run the peers' due steps
    POST   /_sim/peers/{her_id}/messages     a peer sends {"businessDocument": base64, "receiverHerIds": [...]}
    GET    /_sim/peers/{her_id}/received     what a peer has received
"""

from __future__ import annotations

import binascii
from base64 import b64decode

from aiohttp import web

from gateway.testing.nhn.msh_simulator import SIMULATOR

__all__ = ["add_control_routes"]


async def _control_faults(request: web.Request) -> web.Response:
    faults = request.app[SIMULATOR].faults
    if request.method == "DELETE":
        faults.clear()
    else:
        try:
            faults.arm(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
    return web.Response(status=204)


async def _control_advance(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    try:
        ran = request.app[SIMULATOR].advance(float(body.get("seconds", 0)))
    except (TypeError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"ran": ran})


async def _control_peer_send(request: web.Request) -> web.Response:
    body = await request.json()
    try:
        document = b64decode(str(body["businessDocument"]), validate=True)
        to = [str(h) for h in body.get("receiverHerIds") or []]
        record = request.app[SIMULATOR].network.send(request.match_info["her_id"], document, to or None)
    except (KeyError, ValueError, binascii.Error) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"id": record.id}, status=201)


async def _control_peer_received(request: web.Request) -> web.Response:
    try:
        peer = request.app[SIMULATOR].network.peer(request.match_info["her_id"])
    except KeyError as exc:
        return web.json_response({"error": str(exc)}, status=404)
    return web.json_response(
        [
            {"id": m.id, "senderHerId": int(m.sender), "isAppRec": m.is_apprec, "businessDocumentId": m.info.msg_id}
            for m in peer.received
        ]
    )


def add_control_routes(app: web.Application) -> None:
    """Route ``/_sim/…`` on ``app`` (before the catch-all route of the MSH API)."""
    app.router.add_route("POST", "/_sim/faults", _control_faults)
    app.router.add_route("DELETE", "/_sim/faults", _control_faults)
    app.router.add_route("POST", "/_sim/advance", _control_advance)
    app.router.add_route("POST", "/_sim/peers/{her_id}/messages", _control_peer_send)
    app.router.add_route("GET", "/_sim/peers/{her_id}/received", _control_peer_received)

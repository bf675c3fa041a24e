"""API version 3 of the simulated Meldingstjener: configurations, notifications (polled and SSE), messages.

Shapes follow ``../shared/docs/nhn-transports.md`` §1.4 (NAV's typed v3 wrapper and NHN's api-version-3
pages; no v3 OpenAPI file is published). Where NHN's pages leave a status open, the choice is said at the
place it is made.

* Every HER-id a request acts for must have a configuration (``PUT /mshconfigurations``); NHN "rejects"
  others without naming the status. The simulator answers **400** with the HER-ids in ``detail``: NHN's
  troubleshooting page lists "domain error in handling the request" under 400, keeps 403 for a token
  that does not grant the HER-id and 404 for a resource (message, configuration) that does not exist.
* ``clientLocked`` reserves a HER-id for the client that set it: fetching (notifications, polled or
  streamed), sending, marking downloaded, answering with an AppRec and changing or deleting the
  configuration are 423 for every other client (NHN's configuration page: "other clients attempting to
  fetch/send messages for that HER-Id will be rejected with a 423 Locked").
* ``Offset`` is the last offset the client *processed*: notifications *after* it are returned (NHN: "ensures
  only newer notifications are returned"). Asking again from an older stored offset redelivers.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.errors import GatewayError
from gateway.testing.nhn.msh_state import AppRecErrorInfo, Configuration, MessageRecord, MshError, iso
from gateway.xml import parse

if TYPE_CHECKING:
    from gateway.testing.nhn.msh_call import Call

__all__ = ["ROUTES", "Handler", "document_errors", "read_apprec", "read_business_document"]

Handler = Callable[["Call"], Awaitable[web.StreamResponse]]
_OFFSET_MAX = 2**63 - 1
_CHANNELS = {"api": "Api", "apipolling": "Api"}  # "ApiPolling" is the name an earlier page used


# --- what both versions read from a request body -------------------------------------------------------

_DECLARATION = re.compile(rb"^(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]{1,40})[\"']")


def document_errors(document: bytes) -> list[str]:
    """NHN's demands on a posted business document: XML, UTF-8, and UTF-8 declared in its first line."""
    declared = _DECLARATION.match(document)
    if declared is None or declared.group(1).lower() not in (b"utf-8", b"utf8"):
        return ["BusinessDocument must be an XML document whose first line declares encoding UTF-8."]
    try:
        document.decode("utf-8")
    except UnicodeDecodeError:
        return ["BusinessDocument is not valid UTF-8."]
    try:
        parse(document, max_bytes=len(document) + 1)
    except GatewayError as exc:
        return [f"BusinessDocument is not well-formed XML: {exc.message}"]
    return []


def read_business_document(body: dict[str, Any], errors: list[str]) -> bytes | None:
    """The decoded ``businessDocument``, checked as NHN checks it: base64 of XML declared UTF-8, with
    ``contentType`` application/xml and ``contentTransferEncoding`` base64."""
    if str(body.get("contentType") or "").lower() != "application/xml":
        errors.append("ContentType must be 'application/xml'.")
    if str(body.get("contentTransferEncoding") or "").lower() != "base64":
        errors.append("ContentTransferEncoding must be 'base64'.")
    encoded = body.get("businessDocument")
    if not isinstance(encoded, str) or not encoded:
        errors.append("The BusinessDocument field is required.")
        return None
    try:
        document = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        errors.append("BusinessDocument is not a valid base64 string.")
        return None
    problems = document_errors(document)
    errors.extend(problems)
    return None if problems else document


def read_apprec(body: dict[str, Any], errors: list[str]) -> tuple[Any, list[AppRecErrorInfo]]:
    """``appRecStatus`` (a name, or 1-3 as the spec numbers them) and ``appRecErrorList``."""
    names = {"ok": "Ok", "rejected": "Rejected", "okerrorinmessagepart": "OkErrorInMessagePart"}
    raw = body.get("appRecStatus")
    status = None
    if isinstance(raw, str):
        status = names.get(raw.lower()) or {"1": "Ok", "2": "Rejected", "3": "OkErrorInMessagePart"}.get(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        status = {1: "Ok", 2: "Rejected", 3: "OkErrorInMessagePart"}.get(raw)
    if status is None:
        errors.append("AppRecStatus must be Ok, Rejected or OkErrorInMessagePart.")
    items = body.get("appRecErrorList") or []
    found: list[AppRecErrorInfo] = []
    if not isinstance(items, list):
        errors.append("AppRecErrorList must be a list.")
        items = []
    for i, item in enumerate(items):
        code = item.get("errorCode") if isinstance(item, dict) else None
        if not isinstance(code, str) or not code.strip():
            errors.append(f"AppRecErrorList[{i}].ErrorCode is required.")
            continue
        details = item.get("details")
        found.append(AppRecErrorInfo(code.strip(), details if isinstance(details, str) else None))
    if status == "Rejected" and not found and not errors:
        errors.append("AppRecErrorList must be populated when AppRecStatus is Rejected.")
    return status, found


# --- configurations -----------------------------------------------------------------------------------


async def put_configurations(call: Call) -> web.StreamResponse:
    body = await call.json_body()
    items = body.get("configurations")
    if not isinstance(items, list) or not items:
        raise MshError.invalid(["The Configurations field is required and must hold at least one configuration."])
    errors: list[str] = []
    configs: list[Configuration] = []
    for i, item in enumerate(items):
        name = f"Configurations[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{name} must be an object.")
            continue
        her_id = call.her_id(item.get("herId"), f"{name}.HerId", errors)
        channel = str(item.get("receiveNotificationChannel") or "")
        if channel.lower() == "kafka":
            errors.append(f"{name}.ReceiveNotificationChannel: Kafka is available inside NHN only; use Api.")
        elif channel.lower() not in _CHANNELS:
            errors.append(f"{name}.ReceiveNotificationChannel must be Api, not {channel or 'missing'}.")
        locked, refused = item.get("clientLocked"), item.get("receiveRefusedMessageNotices")
        for flag, value in (("ClientLocked", locked), ("ReceiveRefusedMessageNotices", refused)):
            if value is not None and not isinstance(value, bool):
                errors.append(f"{name}.{flag} must be true or false.")
        filters = _message_functions(item.get("rejectMessageFilters"), f"{name}.RejectMessageFilters", errors)
        if her_id:
            owner = call.principal.client_id if locked is True else None
            configs.append(Configuration(her_id, "Api", owner, filters, refused is True))
    her_ids = [c.her_id for c in configs]
    if len(set(her_ids)) != len(her_ids):
        errors.append("Configurations must not repeat a HerId.")
    if errors:
        raise MshError.invalid(errors)
    call.allow(her_ids)
    call.state.configure(call.principal.client_id, configs)
    return web.Response(status=204)


def _message_functions(value: Any, name: str, errors: list[str]) -> frozenset[str]:
    """``rejectMessageFilters`` as NHN documents it: ``{"MessageFunction": [8279 codes]}``."""
    if value is None:
        return frozenset()
    codes = value.get("MessageFunction") if isinstance(value, dict) else None
    if value and (not isinstance(codes, list) or not all(isinstance(c, str) for c in codes)):
        errors.append(f'{name} must be {{"MessageFunction": [message type codes]}}.')
        return frozenset()
    return frozenset(codes or ())


async def delete_configurations(call: Call) -> web.StreamResponse:
    errors: list[str] = []
    her_ids = call.query_her_ids("HerIds", errors, max_items=1500)
    if errors:
        raise MshError.invalid(errors)
    call.allow(her_ids)
    call.state.delete_configurations(call.principal.client_id, her_ids)
    return web.Response(status=204)


# --- notifications ------------------------------------------------------------------------------------


def _notification_query(call: Call, *, stream: bool) -> tuple[frozenset[str], int | None, int]:
    errors: list[str] = []
    her_ids = call.query_her_ids("HerIds", errors, max_items=1500)
    offset = call.query_int("Offset", errors, low=0, high=_OFFSET_MAX)
    if not stream and not call.query_values("Offset"):
        errors.append("The Offset field is required.")
    count = call.query_int("NotificationsToFetch", errors, low=1, high=1000, default=100) or 100
    if errors:
        raise MshError.invalid(errors)
    call.allow(her_ids)
    call.state.require_configured(her_ids)
    call.state.require_unlocked(call.principal.client_id, her_ids)
    return frozenset(her_ids), offset, count


async def get_notifications(call: Call) -> web.StreamResponse:
    her_ids, offset, count = _notification_query(call, stream=False)
    notes, _ = call.state.log.read(her_ids, offset or 0, count)
    return call.json({"notifications": [n.to_json() for n in notes]})


async def stream_notifications(call: Call) -> web.StreamResponse:
    """SSE: ``connected`` (empty data), then a ``notification`` event per notification after ``Offset``
    (no ``Offset``: from the tail, i.e. only what comes next), comment heartbeats while idle. A
    ``drop_stream`` fault cuts the connection - no clean end of the chunked body - after N events."""
    her_ids, offset, _ = _notification_query(call, stream=True)
    log = call.state.log
    cursor = log.tail if offset is None else offset
    drop_after = call.sim.faults.take_stream_drop()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(call.request)
    await response.write(b"event: connected\ndata:\n\n")
    sent = 0
    while not log.closed:
        notes, read_to = log.read(her_ids, cursor, 100)
        for note in notes:
            if drop_after is not None and sent >= drop_after:
                _cut(call.request)
                return response
            data = json.dumps(note.to_json(), separators=(",", ":"))
            await response.write(f"event: notification\ndata: {data}\n\n".encode())
            sent += 1
        cursor = read_to
        if drop_after is not None and sent >= drop_after:
            _cut(call.request)
            return response
        if not notes:
            await log.wait(cursor, call.sim.heartbeat)
            if log.tail <= cursor and not log.closed:
                await response.write(b": heartbeat\n\n")
    return response


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


# --- messages -----------------------------------------------------------------------------------------


async def post_message(call: Call) -> web.StreamResponse:
    body = await call.json_body()
    errors: list[str] = []
    document = read_business_document(body, errors)
    sender = call.her_id(body.get("senderHerId"), "SenderHerId", errors)
    receivers = call.her_id_list(body.get("receiverHerIds"), "ReceiverHerIds", errors)
    msg_type = body.get("messageTypeIdentificator")
    if not isinstance(msg_type, str) or not msg_type.strip():
        errors.append("The MessageTypeIdentificator field is required (a code of code system 8279).")
    if errors or document is None or sender is None or not isinstance(msg_type, str):
        raise MshError.invalid(errors)
    call.allow([sender])
    call.state.require_configured([sender])
    call.state.require_unlocked(call.principal.client_id, [sender])
    record = call.state.submit(sender, receivers, document, msg_type=msg_type.strip())
    return call.json({"id": record.id}, status=202)


def message_json(record: MessageRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "senderHerId": int(record.sender),
        "receiverHerIds": [int(r) for r in record.receivers],
        "businessDocumentId": record.info.msg_id,
        "businessDocumentGenDate": record.info.gen_date_time,
        "businessDocumentMsgType": record.msg_type,
        "contentType": record.content_type,
    }


async def get_message(call: Call) -> web.StreamResponse:
    record = call.state.get(call.path_uuid())
    call.allow_message(record)
    return call.json(message_json(record))


async def get_business_document(call: Call) -> web.StreamResponse:
    """The same shape in both versions."""
    record = call.state.get(call.path_uuid())
    call.allow_message(record)
    encoded = base64.b64encode(record.document).decode("ascii")
    return call.json(
        {"businessDocument": encoded, "contentType": record.content_type, "contentTransferEncoding": "base64"}
    )


def status_json(record: MessageRecord) -> dict[str, Any]:
    status_list = []
    for delivery in record.deliveries.values():
        apprec = delivery.apprec
        status_list.append(
            {
                "receiverHerId": int(delivery.receiver),
                "transportDeliveryState": delivery.state,
                "sent": delivery.sent,
                "apprecInfo": None
                if apprec is None
                else {
                    "appRecStatus": apprec.status,
                    "appRecErrorList": [e.to_json() for e in apprec.errors],
                    "appRecId": apprec.apprec_id,
                },
            }
        )
    return {"statusList": status_list}


async def get_status(call: Call) -> web.StreamResponse:
    record = call.state.get(call.path_uuid())
    call.allow_message(record)
    return call.json(status_json(record))


async def post_apprec(call: Call) -> web.StreamResponse:
    message_id = call.path_uuid()
    body = await call.json_body()
    errors: list[str] = []
    sender = call.her_id(body.get("appRecSenderHerId"), "AppRecSenderHerId", errors)
    status, app_errors = read_apprec(body, errors)
    if errors or sender is None:
        raise MshError.invalid(errors)
    call.allow([sender])
    call.state.require_configured([sender])
    call.state.require_unlocked(call.principal.client_id, [sender])
    apprec = call.state.answer(call.state.get(message_id), sender, status, app_errors)
    return call.json({"id": apprec.id}, status=202)


async def put_downloaded(call: Call) -> web.StreamResponse:
    message_id = call.path_uuid()
    body = await call.json_body()
    errors: list[str] = []
    receiver = call.her_id(body.get("receiverHerId"), "ReceiverHerId", errors)
    if receiver is None:
        raise MshError.invalid(errors)
    call.allow([receiver])
    call.state.require_configured([receiver])
    call.state.require_unlocked(call.principal.client_id, [receiver])
    call.state.mark_downloaded(call.state.get(message_id), receiver)
    return web.Response(status=204)


async def ping(call: Call) -> web.StreamResponse:
    return call.json({"response": "Pong", "timestampUtc": iso(call.sim.clock.now())})


ROUTES: list[tuple[str, str, Handler]] = [
    ("PUT", "/mshconfigurations", put_configurations),
    ("DELETE", "/mshconfigurations", delete_configurations),
    ("GET", "/notifications", get_notifications),
    ("GET", "/notifications/stream", stream_notifications),
    ("POST", "/messages", post_message),
    ("GET", "/messages/{id}", get_message),
    ("GET", "/messages/{id}/business-document", get_business_document),
    ("GET", "/messages/{id}/status", get_status),
    ("POST", "/messages/{id}/apprec", post_apprec),
    ("PUT", "/messages/{id}/downloaded", put_downloaded),
    ("GET", "/ping", ping),
]

"""API version 2 of the simulated Meldingstjener: the paths and shapes of NHN's OpenAPI document "MSH API v2"
(``../shared/standards/nhn/msh-v2/msh-api-v2.json``), on the same state as version 3.

Where v2 differs from v3 on purpose:

* ``POST /Messages`` names no parties: the sender and the receivers (primary first, then copies) are read
  from the business document, ``receiverHerIdsSubset`` narrowing them. The answer is **201** with the id as a
  JSON *string* (``"…"``) and a ``Location`` header; so is ``POST …/apprec/{appRecSenderHerId}``.
* Receiving is polling ``GET /Messages`` for **unread** messages; ``PUT …/read/{herId}`` is v3's
  "downloaded" (one flag per receiver, shared by both versions).
* v2 has no configurations, so nothing is refused for want of one; a HER-id another client locked with a
  v3 configuration is still 423 (the lock is NHN's, per HER-id, not per version). A v2 sender becomes an
  API user of the simulator, so AppRecs and answers to it are delivered inside it.
* v2's ``DeliveryState`` has no ``Abandoned``: a delivery v3 reports as Abandoned is ``Unconfirmed`` here
  (no receipt came, which is all v2 can say).
* ``OkErrorInMessagePart`` is refused (400) when posted: the spec says "NB! Not supported as of this
  writing". It is still reported when an EDI peer answers with it, as the spec's examples show.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.testing.nhn import msh_v3
from gateway.testing.nhn.msh_state import MessageRecord, MshError, read_document

if TYPE_CHECKING:
    from gateway.testing.nhn.msh_call import Call

__all__ = ["ROUTES", "message_json"]

try:
    from zoneinfo import ZoneInfo

    _OSLO: Any = ZoneInfo("Europe/Oslo")
except Exception:  # no time zone database: naive GenDates count as UTC, which only moves the order
    _OSLO = UTC

_INT32_MAX = 2**31 - 1


def message_json(record: MessageRecord, receiver: str, include_metadata: bool = True) -> dict[str, Any]:
    """``Message``: only ``id`` and ``receiverHerId`` without metadata, as the spec says."""
    data: dict[str, Any] = {"id": record.id}
    if include_metadata:
        data["contentType"] = record.content_type
    data["receiverHerId"] = int(receiver)
    if include_metadata:
        data["senderHerId"] = int(record.sender)
        data["businessDocumentId"] = record.info.msg_id
        data["businessDocumentGenDate"] = record.info.gen_date_time
        data["isAppRec"] = record.is_apprec
    return data


def _gen_date_key(record: MessageRecord) -> float:
    """GenDate as a point in time (no offset: Europe/Oslo), the arrival time when it cannot be read."""
    try:
        when = datetime.fromisoformat(record.info.gen_date or "")
    except ValueError:
        return record.created_at
    return (when if when.tzinfo else when.replace(tzinfo=_OSLO)).timestamp()


def _bool(value: str, name: str, errors: list[str]) -> bool:
    if value.lower() not in ("true", "false"):
        errors.append(f"The value '{value}' is not valid for {name}.")
    return value.lower() == "true"


async def get_messages(call: Call) -> web.StreamResponse:
    errors: list[str] = []
    receivers = call.query_her_ids("ReceiverHerIds", errors, max_items=_INT32_MAX)
    sender = call.query_int("SenderHerId", errors, low=1, high=_INT32_MAX)
    doc_ids = call.query_values("BusinessDocumentId")
    if doc_ids and len(doc_ids[0]) > 100:
        errors.append("BusinessDocumentId must be at most 100 characters.")
    include = (
        _bool(call.query_values("IncludeMetadata")[0], "IncludeMetadata", errors)
        if call.query_values("IncludeMetadata")
        else False
    )
    fetch = call.query_int("MessagesToFetch", errors, low=1, high=100, default=10) or 10
    order = (call.query_values("OrderBy") or ["Ascending"])[0].lower()
    if order not in ("ascending", "descending", "1", "2"):
        errors.append(f"The value '{order}' is not valid for OrderBy.")
    if errors:
        raise MshError.invalid(errors)
    call.allow(receivers)
    call.state.require_unlocked(call.principal.client_id, receivers)
    found = [
        (m, r)
        for m, r in call.state.unread(receivers)
        if (sender is None or m.sender == str(sender)) and (not doc_ids or m.info.msg_id == doc_ids[0])
    ]
    found.sort(key=lambda item: (_gen_date_key(item[0]), item[0].created_at), reverse=order in ("descending", "2"))
    return call.json([message_json(m, r, include) for m, r in found[:fetch]])


async def post_message(call: Call) -> web.StreamResponse:
    body = await call.json_body()
    errors: list[str] = []
    document = msh_v3.read_business_document(body, errors)
    subset_raw = body.get("receiverHerIdsSubset")
    subset = call.her_id_list(subset_raw, "ReceiverHerIdsSubset", errors) if subset_raw is not None else None
    if errors or document is None:
        raise MshError.invalid(errors)
    info = read_document(call.state.catalog, document)
    sender = info.envelope.sender_her if info.envelope else None
    receivers = info.receiver_her_ids
    if not sender or not receivers:
        raise MshError.invalid(
            ["The sender's and the receivers' HER-ids could not be read from the business document."]
        )
    if subset:
        strangers = [h for h in subset if h not in receivers]
        if strangers:
            raise MshError.invalid(
                [f"ReceiverHerIdsSubset names HerId(s) the business document does not address: {', '.join(strangers)}."]
            )
        receivers = [r for r in receivers if r in subset]
    call.allow([sender])
    call.state.require_unlocked(call.principal.client_id, [sender])
    call.state.api_users.add(sender)
    record = call.state.submit(sender, receivers, document)
    return call.json(record.id, status=201, headers={"Location": f"/Messages/{record.id}"})


def _for_receiver(call: Call, record: MessageRecord) -> str:
    """The receiver a v2 ``Message`` names: the one the principal acts for, else the first."""
    return next((r for r in record.receivers if call.principal.may_act_for(r)), record.receivers[0])


async def get_message(call: Call) -> web.StreamResponse:
    record = call.state.get(call.path_uuid())
    call.allow_message(record)
    return call.json(message_json(record, _for_receiver(call, record)))


async def get_status(call: Call) -> web.StreamResponse:
    record = call.state.get(call.path_uuid())
    call.allow_message(record)
    return call.json(
        [
            {
                "receiverHerId": int(d.receiver),
                "transportDeliveryState": "Unconfirmed" if d.state == "Abandoned" else d.state,
                "appRecStatus": d.apprec.status if d.apprec else None,
            }
            for d in record.deliveries.values()
        ]
    )


async def get_apprec(call: Call) -> web.StreamResponse:
    record = call.state.get(call.path_uuid())
    call.allow_message(record)
    return call.json(
        [
            {
                "receiverHerId": int(d.receiver),
                "appRecStatus": d.apprec.status if d.apprec else None,
                "appRecErrorList": [e.to_json() for e in d.apprec.errors] if d.apprec else None,
            }
            for d in record.deliveries.values()
        ]
    )


async def post_apprec(call: Call) -> web.StreamResponse:
    message_id = call.path_uuid()
    sender = call.path_her_id("appRecSenderHerId")
    body = await call.json_body()
    errors: list[str] = []
    status, app_errors = msh_v3.read_apprec(body, errors)
    if status == "OkErrorInMessagePart":
        errors.append("AppRecStatus OkErrorInMessagePart is not supported.")
    if errors:
        raise MshError.invalid(errors)
    call.allow([sender])
    call.state.require_unlocked(call.principal.client_id, [sender])
    apprec = call.state.answer(call.state.get(message_id), sender, status, app_errors)
    return call.json(apprec.id, status=201, headers={"Location": f"/Messages/{apprec.id}"})


async def put_read(call: Call) -> web.StreamResponse:
    message_id = call.path_uuid()
    receiver = call.path_her_id("herId")
    call.allow([receiver])
    call.state.require_unlocked(call.principal.client_id, [receiver])
    call.state.mark_downloaded(call.state.get(message_id), receiver)
    return web.Response(status=204)


ROUTES: list[tuple[str, str, msh_v3.Handler]] = [
    ("GET", "/Messages", get_messages),
    ("POST", "/Messages", post_message),
    ("GET", "/Messages/{id}", get_message),
    ("GET", "/Messages/{id}/business-document", msh_v3.get_business_document),
    ("GET", "/Messages/{id}/status", get_status),
    ("GET", "/Messages/{id}/apprec", get_apprec),
    ("POST", "/Messages/{id}/apprec/{appRecSenderHerId}", post_apprec),
    ("PUT", "/Messages/{id}/read/{herId}", put_read),
]

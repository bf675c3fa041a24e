"""The simulated Meldingstjener, API version 2: every endpoint of NHN's OpenAPI document "MSH API v2", each
answer - successes and refusals - validated against that document's schemas, and the shapes compared with
the response examples a real client's tests use (``../shared/standards/nhn/msh-v2/``).

The validator is openapi-schema-validator (OpenAPI 3.0 semantics: ``nullable``, ``format``). Two things
the document itself needs to be read as its authors meant it, both proved on NHN's own examples below:
Swashbuckle writes a nullable reference as ``allOf: [$ref] + nullable: true`` (read: the reference, or
null), and NHN writes ``date-time`` values without an offset (``2025-08-21T11:39:57``; read: ISO 8601).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from gateway.testing.nhn.msh import create_msh_app
from gateway.testing.nhn.msh_state import AppRecErrorInfo
from gateway.testing.nhn.peers import PeerScript
from tests.conftest import FIXTURES, SHARED
from tests.edi2.msh_harness import (
    DIALOG,
    EPIKRISE,
    GP,
    HITRA,
    INNLEGGELSE,
    LAB,
    LEGEVAKT,
    ORKDAL_MED,
    OURS,
    SKAUN,
    Answer,
    Api,
    header_authorizer,
    make_sim,
)

SPEC_DIR = SHARED / "standards" / "nhn" / "msh-v2"
EXAMPLES = SPEC_DIR / "examples"
FROYA_NOT_RECEIVER = "7100101"
QUOTED_UUID = re.compile(r'^"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"$')


def require_spec() -> None:
    """NHN's document is read from ../shared; only outside CI may its absence skip these tests."""
    if (SPEC_DIR / "msh-api-v2.json").is_file() and EXAMPLES.is_dir():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{SPEC_DIR} is missing, and CI must validate the v2 simulator against it")
    pytest.skip("../shared/standards/nhn/msh-v2 is not beside this checkout")


@functools.cache
def spec() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SPEC_DIR / "msh-api-v2.json").read_text(encoding="utf-8"))
    return document


def as_meant(schema: Any) -> Any:
    """``{allOf: [X], nullable: true}`` as Swashbuckle means it: X or null (OpenAPI 3.0.3 reads it as X)."""
    if isinstance(schema, list):
        return [as_meant(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: as_meant(v) for k, v in schema.items()}
    if out.get("nullable") is True and "allOf" in out and "type" not in out:
        out["anyOf"] = [*out.pop("allOf"), {"nullable": True, "enum": [None]}]
        del out["nullable"]
    return out


def _format_checker() -> Any:
    """OpenAPI 3.0's format checks, with ``date-time`` as ISO 8601 (an offset where NHN writes one)."""

    def iso_8601(value: object) -> bool:
        return not isinstance(value, str) or isinstance(datetime.fromisoformat(value), datetime)

    checker = type(oas30_format_checker)()
    checker.checkers = dict(oas30_format_checker.checkers)
    checker.checks("date-time", raises=ValueError)(iso_8601)
    return checker


def schema_for(path: str, method: str, status: int) -> dict[str, Any]:
    response = spec()["paths"][path][method]["responses"][str(status)]
    root = dict(as_meant(response["content"]["application/json"]["schema"]))
    root["components"] = as_meant(spec()["components"])
    return root


def errors_against(path: str, method: str, status: int, body: Any) -> list[str]:
    validator = OAS30Validator(schema_for(path, method, status), format_checker=_format_checker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def conforms(answer: Answer, path: str, method: str, status: int) -> Any:
    """The answer has this status and a body the document's schema for it accepts; returns the body."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["Content-Type"].startswith("application/json")
    assert errors_against(path, method, status, answer.body) == [], answer.body
    return answer.body


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


@pytest.fixture(name="v2")
async def _v2() -> AsyncIterator[Api]:
    require_spec()
    sim = make_sim(api_users=OURS)  # v2 has no configurations: the simulator's config names its API users
    async with TestClient(TestServer(create_msh_app(sim, header_authorizer()))) as client:
        api = Api(client, sim, version="2")
        yield api


def post_body(document: bytes, **over: Any) -> dict[str, Any]:
    return {
        "businessDocument": base64.b64encode(document).decode(),
        "contentType": "application/xml",
        "contentTransferEncoding": "base64",
        **over,
    }


async def send(api: Api, document: bytes, **over: Any) -> str:
    answer = await api.call("POST", "/Messages", json=post_body(document, **over))
    conforms(answer, "/Messages", "post", 201)
    return str(uuid.UUID(answer.body))


async def unread(api: Api, *her_ids: str, **params: str) -> list[dict[str, Any]]:
    query = [("ReceiverHerIds", h) for h in her_ids] + list(params.items())
    body: list[dict[str, Any]] = conforms(await api.call("GET", "/Messages", params=query), "/Messages", "get", 200)
    return body


# --- the round trip --------------------------------------------------------------------------------------


async def test_send_poll_read_and_answer(v2: Api) -> None:
    async with v2.client.post("/Messages", json=post_body(DIALOG, futureField=True), headers=v2.headers()) as raw:
        assert raw.status == 201 and QUOTED_UUID.match(await raw.text())  # a JSON string: quotes and all
    posted = await v2.call("POST", "/Messages", json=post_body(DIALOG))
    message_id = conforms(posted, "/Messages", "post", 201)
    assert posted.headers["Location"] == f"/Messages/{message_id}"
    # the receiver polls: unread, without and with metadata (the first message is read here, unanswered)
    first, second = await unread(v2, GP)
    assert second == {"id": message_id, "receiverHerId": int(GP)}
    assert (await v2.call("PUT", f"/Messages/{first['id']}/read/{GP}")).status == 204
    (meta,) = await unread(v2, GP, IncludeMetadata="true")
    assert meta == {
        "id": message_id,
        "contentType": "application/xml",
        "receiverHerId": int(GP),
        "senderHerId": int(HITRA),
        "businessDocumentId": "52de51c7-fef1-4392-a31a-f66e6bea0f82",
        "businessDocumentGenDate": "2026-11-18T09:12:44",
        "isAppRec": False,
    }
    path = f"/Messages/{message_id}"
    assert conforms(await v2.call("GET", path), "/Messages/{id}", "get", 200) == meta
    document = conforms(
        await v2.call("GET", f"{path}/business-document"), "/Messages/{id}/business-document", "get", 200
    )
    assert base64.b64decode(document["businessDocument"]) == DIALOG
    status = conforms(await v2.call("GET", f"{path}/status"), "/Messages/{id}/status", "get", 200)
    assert status == [{"receiverHerId": int(GP), "transportDeliveryState": "Unconfirmed", "appRecStatus": None}]
    # read: off the unread list, and the transport is acknowledged
    read = await v2.call("PUT", f"{path}/read/{GP}")
    assert (read.status, read.body) == (204, "")
    assert await unread(v2, GP) == []
    answered = await v2.call("POST", f"{path}/apprec/{GP}", json={"appRecStatus": "Ok", "ebXmlOverrides": None})
    apprec_id = conforms(answered, "/Messages/{id}/apprec/{appRecSenderHerId}", "post", 201)
    assert answered.headers["Location"] == f"/Messages/{apprec_id}"
    status = conforms(await v2.call("GET", f"{path}/status"), "/Messages/{id}/status", "get", 200)
    assert status == [{"receiverHerId": int(GP), "transportDeliveryState": "Acknowledged", "appRecStatus": "Ok"}]
    info = conforms(await v2.call("GET", f"{path}/apprec"), "/Messages/{id}/apprec", "get", 200)
    assert info == [{"receiverHerId": int(GP), "appRecStatus": "Ok", "appRecErrorList": []}]
    # the sender gets the AppRec as an unread message of its own
    (apprec,) = await unread(v2, HITRA, IncludeMetadata="true")
    assert (apprec["id"], apprec["isAppRec"], apprec["senderHerId"]) == (apprec_id, True, int(GP))


async def test_receivers_come_from_the_document_and_the_subset_narrows_them(v2: Api) -> None:
    both = await send(v2, INNLEGGELSE)
    conformed = conforms(await v2.call("GET", f"/Messages/{both}/status"), "/Messages/{id}/status", "get", 200)
    assert [s["receiverHerId"] for s in conformed] == [int(ORKDAL_MED), int(LEGEVAKT)]
    only_copy = await send(v2, INNLEGGELSE, receiverHerIdsSubset=[int(LEGEVAKT)])
    conformed = conforms(await v2.call("GET", f"/Messages/{only_copy}/status"), "/Messages/{id}/status", "get", 200)
    assert [s["receiverHerId"] for s in conformed] == [int(LEGEVAKT)]
    stranger = await v2.call("POST", "/Messages", json=post_body(INNLEGGELSE, receiverHerIdsSubset=[int(GP)]))
    assert "7102001" in conforms(stranger, "/Messages", "post", 400)["validationErrors"][0]


async def test_polling_filters_order_and_limits(v2: Api) -> None:
    first = await send(v2, DIALOG)
    second = await send(v2, DIALOG)
    from_lab = v2.sim.network.send(LAB, DIALOG, to=[GP]).id
    assert [m["id"] for m in await unread(v2, GP)] == [first, second, from_lab]
    assert [m["id"] for m in await unread(v2, GP, MessagesToFetch="2")] == [first, second]
    assert [m["id"] for m in await unread(v2, GP, SenderHerId=LAB)] == [from_lab]
    assert len(await unread(v2, GP, BusinessDocumentId="52de51c7-fef1-4392-a31a-f66e6bea0f82")) == 3
    assert await unread(v2, GP, BusinessDocumentId="no-such-msgid") == []
    for _ in range(9):
        v2.sim.network.send(LAB, DIALOG, to=[GP])
    assert len(await unread(v2, GP)) == 10  # MessagesToFetch defaults to 10
    assert len(await unread(v2, GP, MessagesToFetch="100")) == 12
    for params in (
        [("ReceiverHerIds", GP), ("MessagesToFetch", "0")],
        [("ReceiverHerIds", GP), ("MessagesToFetch", "101")],
        [("ReceiverHerIds", GP), ("IncludeMetadata", "maybe")],
        [("ReceiverHerIds", GP), ("OrderBy", "Sideways")],
        [("ReceiverHerIds", GP), ("BusinessDocumentId", "x" * 101)],
        [("MessagesToFetch", "10")],
    ):
        refused = conforms(await v2.call("GET", "/Messages", params=params), "/Messages", "get", 400)
        assert refused["errorCode"] == 1000 and refused["validationErrors"], params


async def test_polling_orders_by_gendate(v2: Api) -> None:
    """GenDate orders the unread list, not arrival: GenDates 2026-11-18, -17 and -16 arrive in that order."""
    dialog = await send(v2, DIALOG)
    svar = v2.sim.network.send(LAB, (FIXTURES / "svarrapport-1.4" / "svar-lab-biokjemi-latin1.xml").read_bytes()).id
    epikrise = v2.sim.network.send(ORKDAL_MED, EPIKRISE).id
    assert [m["id"] for m in await unread(v2, GP)] == [epikrise, svar, dialog]
    assert [m["id"] for m in await unread(v2, GP, OrderBy="Descending")] == [dialog, svar, epikrise]
    assert [m["id"] for m in await unread(v2, GP, OrderBy="2", MessagesToFetch="1")] == [dialog]


async def test_refusals_are_error_messages_the_document_describes(v2: Api) -> None:
    narrow = f"sio-gateway;{GP}"
    forbidden = conforms(
        await v2.call("POST", "/Messages", json=post_body(DIALOG), principal=narrow), "/Messages", "post", 403
    )
    assert forbidden["error"] == "Not authorized for HerId(s): 7100201" and forbidden["stackTrace"] is None
    conforms(
        await v2.call("GET", "/Messages", params=[("ReceiverHerIds", HITRA)], principal=narrow), "/Messages", "get", 403
    )
    message_id = await send(v2, DIALOG)
    path = f"/Messages/{message_id}"
    stranger = f"sio-gateway;{SKAUN}"
    for suffix, template in (("", "/Messages/{id}"), ("/status", "/Messages/{id}/status"),
                             ("/apprec", "/Messages/{id}/apprec"),
                             ("/business-document", "/Messages/{id}/business-document")):  # fmt: skip
        conforms(await v2.call("GET", path + suffix, principal=stranger), template, "get", 403)
        unknown = await v2.call("GET", f"/Messages/{uuid.uuid4()}{suffix}")
        assert conforms(unknown, template, "get", 404)["error"] == "Could not find database document"
    conforms(await v2.call("PUT", f"{path}/read/{GP}", principal=stranger), "/Messages/{id}/read/{herId}", "put", 403)
    conforms(await v2.call("PUT", f"{path}/read/0"), "/Messages/{id}/read/{herId}", "put", 400)
    apprec_path = "/Messages/{id}/apprec/{appRecSenderHerId}"
    conforms(
        await v2.call("POST", f"{path}/apprec/{GP}", json={"appRecStatus": "Ok"}, principal=stranger),
        apprec_path,
        "post",
        403,
    )
    bad = await v2.call("POST", "/Messages", json=post_body(b"<a/>"))
    assert conforms(bad, "/Messages", "post", 400)["error"] == "Model validation error occurred"
    no_source = {k: v for k, v in v2.headers().items() if k != "nhn-source-system"}
    conforms(
        await v2.call("GET", "/Messages", params=[("ReceiverHerIds", GP)], headers=no_source), "/Messages", "get", 400
    )


async def test_apprec_rules(v2: Api) -> None:
    message_id = await send(v2, DIALOG)
    path = f"/Messages/{message_id}/apprec/{GP}"
    template = "/Messages/{id}/apprec/{appRecSenderHerId}"
    assert conforms(await v2.call("POST", path, json={"appRecStatus": "Rejected"}), template, "post", 400)
    not_supported = await v2.call("POST", path, json={"appRecStatus": "OkErrorInMessagePart"})
    assert "not supported" in conforms(not_supported, template, "post", 400)["validationErrors"][0]
    conforms(await v2.call("POST", f"/Messages/{message_id}/apprec/{FROYA_NOT_RECEIVER}", json={"appRecStatus": "Ok"},
                           principal=f"sio-gateway;{FROYA_NOT_RECEIVER}"), template, "post", 400)  # fmt: skip
    rejected = {
        "appRecStatus": 2,
        "appRecErrorList": [{"errorCode": "E10", "details": "Ugyldig meldingsidentifikator"}],
    }
    conforms(await v2.call("POST", path, json=rejected), template, "post", 201)
    info = conforms(await v2.call("GET", f"/Messages/{message_id}/apprec"), "/Messages/{id}/apprec", "get", 200)
    assert info == [{"receiverHerId": int(GP), "appRecStatus": "Rejected", "appRecErrorList": [
        {"errorCode": "E10", "details": "Ugyldig meldingsidentifikator", "description": "Ugyldig meldingsidentifikator",
         "oid": "2.16.578.1.12.4.1.1.8221"}]}]  # fmt: skip


async def test_peer_outcomes_as_v2_sees_them(v2: Api) -> None:
    """v2 has no Abandoned: a delivery no receipt ever came for stays Unconfirmed."""
    v2.sim.network.peer(ORKDAL_MED).script = PeerScript(transport="Abandoned")
    v2.sim.network.peer(LAB).script = PeerScript(
        apprec="OkErrorInMessagePart", apprec_errors=(AppRecErrorInfo("E31", "Pasientens fødselsnummer er feil"),)
    )
    abandoned = await send(v2, INNLEGGELSE, receiverHerIdsSubset=[int(ORKDAL_MED)])
    answered = v2.sim.state.submit(HITRA, [LAB], DIALOG).id
    v2.sim.advance(60)
    status = conforms(await v2.call("GET", f"/Messages/{abandoned}/status"), "/Messages/{id}/status", "get", 200)
    assert status == [{"receiverHerId": int(ORKDAL_MED), "transportDeliveryState": "Unconfirmed", "appRecStatus": None}]
    info = conforms(await v2.call("GET", f"/Messages/{answered}/apprec"), "/Messages/{id}/apprec", "get", 200)
    assert info[0]["appRecStatus"] == "OkErrorInMessagePart" and info[0]["appRecErrorList"][0]["errorCode"] == "E31"


async def test_both_versions_share_one_store_and_one_lock(v2: Api) -> None:
    v3 = Api(v2.client, v2.sim)
    assert (await v3.configure(OURS)).status == 204
    sent = (await v3.send(DIALOG, HITRA, [GP])).body["id"]
    assert [m["id"] for m in await unread(v2, GP)] == [sent]
    assert (await v2.call("PUT", f"/Messages/{sent}/read/{GP}")).status == 204
    assert (await v3.status(sent))[0]["transportDeliveryState"] == "Acknowledged"
    assert (await v3.configure((HITRA,), locked=True)).status == 204
    assert (await v3.configure((HITRA,), principal=f"other-client;{HITRA}")).status == 423
    locked = await v2.call("POST", "/Messages", json=post_body(DIALOG), principal=f"other-client;{HITRA}")
    assert locked.status == 423 and set(locked.body) == {
        "error",
        "errorCode",
        "validationErrors",
        "stackTrace",
        "requestId",
    }


# --- NHN's own examples ----------------------------------------------------------------------------------

_EXAMPLE_SCHEMAS = {
    "get-apprecinfo-multi.json": ("/Messages/{id}/apprec", "get", 200),
    "get-apprecinfo-ok.json": ("/Messages/{id}/apprec", "get", 200),
    "get-apprecinfo-okerrorinmessagepart.json": ("/Messages/{id}/apprec", "get", 200),
    "get-apprecinfo-rejected.json": ("/Messages/{id}/apprec", "get", 200),
    "get-business-document-apprec-response.json": ("/Messages/{id}/business-document", "get", 200),
    "get-business-document-response.json": ("/Messages/{id}/business-document", "get", 200),
    "get-message-apprec-response.json": ("/Messages/{id}", "get", 200),
    "get-message-response.json": ("/Messages/{id}", "get", 200),
    "get-messages-response.json": ("/Messages", "get", 200),
    "get-status-acked.json": ("/Messages/{id}/status", "get", 200),
    "get-status.json": ("/Messages/{id}/status", "get", 200),
    "post-apprec-response.txt": ("/Messages/{id}/apprec/{appRecSenderHerId}", "post", 201),
    "post-message-response.txt": ("/Messages", "post", 201),
}


def test_the_validator_takes_nhns_examples_and_is_strict() -> None:
    """Every example NHN's client tests read validates as the document is meant; the one with an unknown
    property does not (the schemas forbid additional properties: a client must still tolerate them)."""
    require_spec()
    names = {p.name for p in EXAMPLES.iterdir()}
    assert names == {*_EXAMPLE_SCHEMAS, "get-message-response-with-unknown-property.json"}
    for name, (path, method, status) in _EXAMPLE_SCHEMAS.items():
        body = example(name)
        assert errors_against(path, method, status, body) == [], name
        if name.endswith(".txt"):
            assert QUOTED_UUID.match((EXAMPLES / name).read_text(encoding="utf-8").strip())
    unknown = example("get-message-response-with-unknown-property.json")
    assert any("unknownProperty" in e for e in errors_against("/Messages/{id}", "get", 200, unknown))
    assert errors_against("/Messages/{id}/status", "get", 200, [{"receiverHerId": 1, "transportDeliveryState": "Lost"}])
    assert errors_against("/Messages", "post", 201, "not-a-uuid")  # formats are checked too
    assert errors_against("/Messages/{id}", "get", 200, {"id": str(uuid.uuid4()), "businessDocumentGenDate": "today"})


async def test_our_answers_have_the_examples_shapes(v2: Api) -> None:
    v2.sim.network.peer(ORKDAL_MED).script = PeerScript(
        apprec="Rejected", apprec_errors=(AppRecErrorInfo("E10", "Ugyldig meldingsidentifikator"),)
    )
    message_id = await send(v2, INNLEGGELSE, receiverHerIdsSubset=[int(ORKDAL_MED)])
    v2.sim.advance()
    ours = {
        "get-messages-response.json": await unread(v2, SKAUN),
        "get-message-response.json": (await v2.call("GET", f"/Messages/{message_id}")).body,
        "get-business-document-response.json": (await v2.call("GET", f"/Messages/{message_id}/business-document")).body,
        "get-status-acked.json": (await v2.call("GET", f"/Messages/{message_id}/status")).body,
        "get-apprecinfo-rejected.json": (await v2.call("GET", f"/Messages/{message_id}/apprec")).body,
    }
    (apprec,) = await unread(v2, SKAUN, IncludeMetadata="true")
    ours["get-message-apprec-response.json"] = apprec
    for name, body in ours.items():
        theirs = example(name)
        mine, expected = (body[0], theirs[0]) if isinstance(theirs, list) else (body, theirs)
        assert set(expected) <= set(mine), (name, set(expected) - set(mine))
        assert {k: type(v) for k, v in expected.items() if v is not None} == {
            k: type(mine[k]) for k, v in expected.items() if v is not None
        }, name
    assert ours["get-status-acked.json"] == [
        {"receiverHerId": int(ORKDAL_MED), "transportDeliveryState": "Acknowledged", "appRecStatus": "Rejected"}
    ]


async def test_the_apprec_nhn_builds_has_the_examples_structure(v2: Api) -> None:
    message_id = await send(v2, DIALOG)
    conforms(await v2.call("POST", f"/Messages/{message_id}/apprec/{GP}", json={"appRecStatus": "Ok"}),
             "/Messages/{id}/apprec/{appRecSenderHerId}", "post", 201)  # fmt: skip
    (apprec,) = await unread(v2, HITRA)
    ours = await apprec_root(v2, apprec["id"])
    theirs = etree.fromstring(
        base64.b64decode(example("get-business-document-apprec-response.json")["businessDocument"])
    )
    assert ours.tag == theirs.tag  # AppRec 1.1
    for path in ("MsgType", "Sender/Role", "Receiver/Role", "Status", "OriginalMsgId/MsgType"):
        q = "/".join(f"{{{etree.QName(theirs).namespace}}}{p}" for p in path.split("/"))
        assert ours.find(q).get("V") == theirs.find(q).get("V"), path
    ns = {"a": etree.QName(theirs).namespace}
    assert ours.xpath("string(a:OriginalMsgId/a:Id)", namespaces=ns) == "52de51c7-fef1-4392-a31a-f66e6bea0f82"


async def apprec_root(api: Api, message_id: str) -> Any:
    body = (await api.call("GET", f"/Messages/{message_id}/business-document")).body
    return etree.fromstring(base64.b64decode(body["businessDocument"]))

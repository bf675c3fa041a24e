"""The edi2 adapter's MSH client reads NHN's own v2 response examples (../shared/standards/nhn/msh-v2/examples):
unread messages, a message's metadata (a GenDate without offset, an unknown property), the business document,
the transport status and the AppRec info in each of its forms."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.edi2.msh import MshClient
from adapters.edi2.msh_answers import sent_status

from ..conftest import SHARED, require_shared

EXAMPLES = SHARED / "standards" / "nhn" / "msh-v2" / "examples"
MESSAGE = "80383714-f0de-4cf8-900f-c79ba3af028c"


class NoAuth:
    """The HelseID client's part the MSH client calls, without tokens: this test is about reading answers."""

    async def headers(self, method: str, url: str) -> dict[str, str]:
        return {"Authorization": "DPoP test-token", "DPoP": "test-proof"}

    def invalidate(self, token: str | None = None) -> None:
        raise AssertionError("no 401 expected")

    def note_nonce(self, url: str, nonce: str) -> None:
        raise AssertionError("no nonce expected")


def _example(name: str) -> web.Response:
    return web.Response(body=(EXAMPLES / name).read_bytes(), content_type="application/json")


@pytest.fixture(name="nhn")
async def _nhn(request: pytest.FixtureRequest) -> AsyncIterator[tuple[MshClient, dict[str, str]]]:
    """A v2 server answering with NHN's examples; ``apprec`` picks which AppRec info example."""
    require_shared()
    chosen: dict[str, str] = {"apprec": "get-apprecinfo-ok.json", "message": "get-message-response.json"}

    async def route(request: web.Request) -> web.Response:
        assert request.headers["api-version"] == "2" and request.headers["nhn-source-system"]
        path = request.path
        if path == "/Messages":
            return _example("get-messages-response.json")
        if path.endswith("/business-document"):
            return _example("get-business-document-response.json")
        if path.endswith("/status"):  # the transport state of each receiver the chosen AppRec info names
            infos = json.loads((EXAMPLES / chosen["apprec"]).read_text())
            return web.json_response(
                [{"receiverHerId": i["receiverHerId"], "transportDeliveryState": "Acknowledged"} for i in infos]
            )
        if path.endswith("/apprec"):
            return _example(chosen["apprec"])
        return _example(chosen["message"])

    app = web.Application()
    app.router.add_get("/{tail:.*}", route)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        client = MshClient(
            str(server.make_url("")).rstrip("/"), NoAuth(), session=session, api_version="2"  # type: ignore[arg-type]
        )
        yield client, chosen


async def test_unread_messages(nhn: tuple[MshClient, dict[str, str]]) -> None:
    client, _ = nhn
    assert await client.unread(["8143060"]) == [
        ("0c8f3d36-f9e7-4e3f-9d5c-c820fa9b5773", "8143060"),
        ("99607d81-18bd-45ee-a96f-85e3687a5e05", "8143060"),
    ]


@pytest.mark.parametrize("example", ["get-message-response.json", "get-message-response-with-unknown-property.json"])
async def test_message_metadata_with_a_gen_date_without_offset(
    nhn: tuple[MshClient, dict[str, str]], example: str
) -> None:
    client, chosen = nhn
    chosen["message"] = example
    meta = await client.message(MESSAGE)
    assert meta["senderHerId"] == 8094866 and meta["businessDocumentId"] == "c88389b7-f8ad-40b2-81e1-090e715b7530"


async def test_business_document_is_the_xml_byte_for_byte(nhn: tuple[MshClient, dict[str, str]]) -> None:
    client, _ = nhn
    answer = json.loads((EXAMPLES / "get-business-document-response.json").read_text())
    expected = base64.b64decode(answer["businessDocument"])
    document = await client.business_document(MESSAGE)
    assert document == expected and document.startswith(b'<?xml version="1.0" encoding="utf-8"?>')


@pytest.mark.parametrize(
    "example",
    ["get-apprecinfo-ok.json", "get-apprecinfo-rejected.json", "get-apprecinfo-okerrorinmessagepart.json",
     "get-apprecinfo-multi.json"],
)  # fmt: skip
async def test_apprec_info_in_each_form(nhn: tuple[MshClient, dict[str, str]], example: str) -> None:
    """Each receiver's AppRec status as the KITH code (Ok 1, Rejected 2, OkErrorInMessagePart 3, null none)
    and its 8221 errors, code and text."""
    client, chosen = nhn
    chosen["apprec"] = example
    infos = json.loads((EXAMPLES / example).read_text())
    statuses = {s.receiver_her: s for s in await client.status(MESSAGE)}
    assert set(statuses) == {str(i["receiverHerId"]) for i in infos}
    kith = {"Ok": "1", "Rejected": "2", "OkErrorInMessagePart": "3", None: None}
    for info in infos:
        mine = statuses[str(info["receiverHerId"])]
        assert mine.transport_state == "Acknowledged"
        assert mine.apprec_status == kith[info["appRecStatus"]]
        assert list(mine.apprec_errors) == [(e["errorCode"], e["details"]) for e in info.get("appRecErrorList") or []]


async def test_the_acknowledged_status_example(nhn: tuple[MshClient, dict[str, str]]) -> None:
    """NHN's status example itself, read through the v3 reader the client shares."""
    client, _ = nhn
    (entry,) = json.loads((EXAMPLES / "get-status-acked.json").read_text())
    status = sent_status(entry, entry["appRecStatus"], [])
    assert (status.receiver_her, status.transport_state, status.apprec_status) == ("8094866", "Acknowledged", "1")
    assert client.api_version == "2"


def test_the_examples_are_there() -> None:
    require_shared()
    assert isinstance(EXAMPLES, Path) and (EXAMPLES / "get-status-acked.json").is_file()

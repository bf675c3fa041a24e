"""The MSH client against answers that go wrong on the wire: cut off mid-body, not JSON, without an id, with
entries that are not entries. Each is a TransportError (NHN or the network: the adapter tries again and
never skips a message for it) or an entry left out - never an exception of another kind."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from adapters.edi2.msh import MshClient
from gateway.errors import TransportError

from .test_msh_client_examples import NoAuth

MESSAGE = "80383714-f0de-4cf8-900f-c79ba3af028c"


@contextlib.asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[str]:
    """A server that reads a request and writes ``answer`` as it is - then hangs up."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


def http(status: str, body: bytes, *, length: int | None = None) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {length or len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (http("200 OK", b'{"businessDocument": "PD94', length=4096), "did not arrive whole"),
        (http("200 OK", b"<html>maintenance</html>"), "not JSON"),
    ],
)
async def test_a_broken_answer_is_a_transport_error(answer: bytes, words: str) -> None:
    async with raw_server(answer) as url, aiohttp.ClientSession() as session:
        client = MshClient(url, NoAuth(), session=session)  # type: ignore[arg-type]
        with pytest.raises(TransportError, match=words):
            await client.business_document(MESSAGE)


async def test_a_message_taken_without_an_id_is_a_transport_error() -> None:
    async with raw_server(http("202 Accepted", b'{"status": "ok"}')) as url, aiohttp.ClientSession() as session:
        client = MshClient(url, NoAuth(), session=session)  # type: ignore[arg-type]
        with pytest.raises(TransportError, match="without a message id"):
            await client.send(sender_her="7100701", receiver_hers=["7200101"], msg_type="X", xml=b"<x/>")


async def test_entries_that_are_not_entries_are_left_out() -> None:
    body = (
        b'{"notifications": [{"offset": "x"}, 7, {"offset": 1001, "type": "NewMessage", '
        b'"relatedMessageId": "../../admin"}, {"offset": 1002, "type": "NewMessage", "relatedMessageId": "'
        + MESSAGE.encode()
        + b'", "notificationReceiverHerId": "7102001"}]}'
    )
    async with raw_server(http("200 OK", body)) as url, aiohttp.ClientSession() as session:
        client = MshClient(url, NoAuth(), session=session)  # type: ignore[arg-type]
        (only,) = await client.notifications(["7102001"], offset=1000)
        assert (only.offset, only.related_message_id) == (1002, MESSAGE)


async def test_an_id_that_is_not_one_never_goes_into_a_path() -> None:
    async with aiohttp.ClientSession() as session:
        client = MshClient("http://127.0.0.1:9", NoAuth(), session=session)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not an NHN message id"):
            await client.business_document("../../mshconfigurations")

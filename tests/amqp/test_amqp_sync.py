"""Synchronous request/reply over a real RabbitMQ (HITS 1216 §2.2.2): the hub's EHR asks St. Olavs and
waits; St. Olavs' gateway hands the request to its EHR's sync endpoint and sends the answer back on the
hub's ``_syncreply`` queue with the request's correlation-id. Timeouts, refusals and bad requests end the
wait at once with their condition; a reply too late for its caller is dropped, never given to another."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from proton import Message

from adapters.amqp.fields import read_error
from adapters.amqp.settings import AmqpSettings
from gateway.errors import ConfigError, SyncNotSupported, SyncRefused, SyncTimeout
from gateway.pipeline.sync import header_safe
from gateway.testing.rabbit import QUEUE_SUFFIXES, Broker

from ..region import ADMIN, fixture_bytes, with_msg_id
from .amqp_region import amqp_region
from .raw import nothing_on, peer_message, put, take

STOLAV, STOLAV_OTHER, HITRA, GP = "7200101", "7200102", "7100201", "7102001"


def _at_stolav(body: bytes) -> bytes:
    """The dialogue fixtures between Hitra and the GP, with St. Olavs (7200000/7200101) in the GP's place."""
    return with_msg_id(body.replace(b"7102000", b"7200000").replace(b"7102001", b"7200101"))


REQUEST = "dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml"  # Hitra -> (St. Olavs)
ANSWER = "dialogmelding-1.1/helsefaglig-dialog-svar.xml"  # (St. Olavs) -> Hitra


@dataclass
class SyncEhr:
    """St. Olavs' EHR as its sync endpoint: answers with ``answer`` once ``go`` is set."""

    answer: bytes
    status: int = 200
    go: asyncio.Event = field(default_factory=asyncio.Event)
    asked: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    #: hold the first request until a second one has come (a bound for a stuck run, not a timing)
    hold_first: bool = False
    _second: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.asked.append((await request.read(), dict(request.headers)))
        if self.hold_first and len(self.asked) == 1:
            await asyncio.wait_for(self._second.wait(), 30.0)
        elif self.hold_first:
            self._second.set()
        await self.go.wait()
        return web.Response(body=self.answer, status=self.status, content_type="application/xml")


@contextlib.asynccontextmanager
async def sync_ehr(answer: bytes) -> AsyncIterator[tuple[SyncEhr, str]]:
    ehr = SyncEhr(answer)
    ehr.go.set()
    app = web.Application()
    app.router.add_post("/sync", ehr.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield ehr, f"http://127.0.0.1:{port}/sync"
    finally:
        ehr.go.set()
        await runner.cleanup()


async def test_a_request_gets_the_receivers_answer(broker: Broker, tmp_path: Path) -> None:
    request = _at_stolav(fixture_bytes(REQUEST))
    # an answer larger than one read of the EHR's response (the body is read to its end, within the cap)
    answer = _at_stolav(fixture_bytes(ANSWER)) + b"<!--" + b" padding " * 30_000 + b"-->\n"
    async with sync_ehr(answer) as (ehr, url), amqp_region(tmp_path, broker, stolav_sync_url=url) as region:
        reply = await region.hub.request(request, ADMIN, timeout_s=60.0)

        assert reply.content == answer  # verified, judged, and given back byte for byte
        assert (reply.kind, reply.from_her) == ("dialogmelding-1.1", STOLAV)
        [(asked, headers)] = ehr.asked  # St. Olavs' EHR got the request as the hub's EHR wrote it
        assert asked == request
        assert (headers["X-From-Her-Id"], headers["X-To-Her-Id"]) == (HITRA, STOLAV)
        # nothing queued or stored on either side, and no AppRec either way
        for gateway in (region.hub, region.stolav):
            assert await gateway.store.counts() == {}  # no message and no delivery in any state


async def test_a_reply_too_late_is_dropped_and_the_next_request_gets_its_own(broker: Broker, tmp_path: Path) -> None:
    first, answer = _at_stolav(fixture_bytes(REQUEST)), _at_stolav(fixture_bytes(ANSWER))
    async with sync_ehr(answer) as (ehr, url), amqp_region(tmp_path, broker, stolav_sync_url=url) as region:
        ehr.go.clear()  # St. Olavs' EHR holds its answer
        with pytest.raises(SyncTimeout):
            await region.hub.request(first, ADMIN, timeout_s=0.5)
        ehr.go.set()  # ... and gives it after the caller stopped waiting: the hub drops it

        second_answer = with_msg_id(answer)
        ehr.answer = second_answer
        reply = await region.hub.request(with_msg_id(first), ADMIN, timeout_s=60.0)
        assert reply.content == second_answer
        assert len(ehr.asked) == 2


async def test_a_party_that_takes_no_requests_refuses_at_once(broker: Broker, tmp_path: Path) -> None:
    request = _at_stolav(fixture_bytes(REQUEST)).replace(b"7200101", STOLAV_OTHER.encode())
    async with amqp_region(tmp_path, broker) as region:
        with pytest.raises(SyncRefused) as refused:
            await region.hub.request(request, ADMIN, timeout_s=60.0)
    assert refused.value.peer_condition == "transport:unsupported-message"


async def test_an_ehr_that_fails_is_reported_not_waited_out(broker: Broker, tmp_path: Path) -> None:
    request = _at_stolav(fixture_bytes(REQUEST))
    async with sync_ehr(b"<not-kith/>") as (_ehr, url), amqp_region(tmp_path, broker, stolav_sync_url=url) as region:
        with pytest.raises(SyncRefused) as refused:
            await region.hub.request(request, ADMIN, timeout_s=60.0)
    assert refused.value.peer_condition == "transport:internal-error"
    assert "valid answer" in str(refused.value)  # the receiver's public words; nothing of its EHR's address
    assert "127.0.0.1" not in str(refused.value)


async def test_a_receiver_inside_the_hub_has_no_request_reply(broker: Broker, tmp_path: Path) -> None:
    async with amqp_region(tmp_path, broker) as region:
        with pytest.raises(SyncNotSupported):
            await region.hub.request(with_msg_id(fixture_bytes(REQUEST)), ADMIN, timeout_s=5.0)


async def test_a_request_without_reply_to_is_reported_to_its_sender(broker: Broker, tmp_path: Path) -> None:
    """Nowhere to answer: ``invalid-field-value`` on the sender's error queue (Helsenorge.Messaging PR #42)."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[]) as region:
        request = _request(
            b"\x30\x80 the CMS does not matter: the fields are checked first", reply_to=None, correlation_id="c-1"
        )
        await put(broker, region.vhost, f"/exchange/{region.namespace}/{STOLAV}_sync", request)
        report = read_error(await take(broker, region.vhost, f"{HITRA}_error"))
    assert report is not None
    assert (report.condition, report.data) == ("transport:invalid-field-value", "ReplyTo")  # the C# library's name
    assert report.original_message_id == request.id
    assert (report.from_her, report.to_her) == (STOLAV, HITRA)


async def test_a_request_that_does_not_verify_gets_the_one_answer(broker: Broker, tmp_path: Path) -> None:
    async with amqp_region(tmp_path, broker, hub_her_ids=[]) as region:
        request = _request(b"\x30\x80 not CMS at all")
        await put(broker, region.vhost, f"/exchange/{region.namespace}/{STOLAV}_sync", request)
        report = read_error(await take(broker, region.vhost, f"{HITRA}_error"))
    assert report is not None
    assert report.condition == "transport:invalid-cms-pkcs"  # the uniform answer (docs/security.md)


async def test_a_slow_answer_does_not_hold_up_the_next_request(broker: Broker, tmp_path: Path) -> None:
    """St. Olavs' EHR holds the first request until the second has reached it: answered one at a time, the
    first would wait out its time; answered side by side, both come back."""
    request, answer = _at_stolav(fixture_bytes(REQUEST)), _at_stolav(fixture_bytes(ANSWER))
    async with sync_ehr(answer) as (ehr, url), amqp_region(tmp_path, broker, stolav_sync_url=url) as region:
        ehr.hold_first = True
        replies = await asyncio.gather(
            region.hub.request(with_msg_id(request), ADMIN, timeout_s=60.0),  # bounds for a busy machine
            region.hub.request(with_msg_id(request), ADMIN, timeout_s=60.0),
        )
    assert [r.content for r in replies] == [answer, answer]


async def test_a_reply_to_on_another_partys_queue_is_refused(broker: Broker, tmp_path: Path) -> None:
    """Our signed answer goes only to the requester's own queues, never dropped on a third party's."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[]) as region:
        request = _request(b"\x30\x80 the fields are checked first", reply_to=f"{GP}_async")
        await put(broker, region.vhost, f"/exchange/{region.namespace}/{STOLAV}_sync", request)
        report = read_error(await take(broker, region.vhost, f"{HITRA}_error"))
    assert report is not None and (report.condition, report.data) == ("transport:invalid-field-value", "ReplyTo")


async def test_a_party_whose_reply_queue_this_gateway_does_not_read_cannot_ask(broker: Broker, tmp_path: Path) -> None:
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP]) as region:  # Hitra's queues are read elsewhere
        with pytest.raises(SyncNotSupported):
            await region.hub.request(_at_stolav(fixture_bytes(REQUEST)), ADMIN, timeout_s=5.0)


def test_header_values_that_cannot_go_on_http_are_left_out() -> None:
    assert header_safe({"X-Msg-Id": "a\nb", "X-Kind": "dialogmelding-1.1", "X-Long": "x" * 129}) == {
        "X-Kind": "dialogmelding-1.1"
    }


async def test_a_process_with_a_reply_queue_of_its_own_gets_its_replies_there(broker: Broker, tmp_path: Path) -> None:
    """With several gateway processes on one party each reads its own reply queue (``sync_reply_queue``,
    Helsenorge.Messaging's ReplyQueueMapping): the reply comes there, and nothing on the shared one."""
    request, answer = _at_stolav(fixture_bytes(REQUEST)), _at_stolav(fixture_bytes(ANSWER))
    queues = (*QUEUE_SUFFIXES, "syncreply_2")
    async with sync_ehr(answer) as (_ehr, url):
        region = amqp_region(
            tmp_path, broker, stolav_sync_url=url, suffixes=queues, sync_reply_queue="{her}_syncreply_2"
        )
        async with region as r:
            reply = await r.hub.request(with_msg_id(request), ADMIN, timeout_s=60.0)
            assert reply.content == answer
            assert await nothing_on(broker, r.vhost, f"{HITRA}_syncreply", for_s=0.5)


def test_a_reply_queue_must_be_the_partys_own() -> None:
    for wrong in ("syncreply_2", "{her}", "other_{her}_x", "{her}_a/b", "{her}_{her}"):
        with pytest.raises(ConfigError):
            AmqpSettings.from_options({"url": "amqp://127.0.0.1:5672", "sync_reply_queue": wrong})
    settings = AmqpSettings.from_options({"url": "amqp://127.0.0.1:5672", "sync_reply_queue": "{her}_syncreply_2"})
    assert settings.reply_queue("7100201") == "7100201_syncreply_2"


def _request(body: bytes, **fields: object) -> Message:
    """A synchronous request from Hitra to St. Olavs as a peer puts it on the bus, ``fields`` changed."""
    return peer_message(body, from_her=HITRA, to_her=STOLAV, queue="sync", subject="DIALOG_HELSEFAGLIG", **fields)

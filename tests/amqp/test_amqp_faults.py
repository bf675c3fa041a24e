"""What goes wrong on the bus and what the gateway makes of it: a message it cannot take now waits and
comes back, one that keeps failing ends in ``_dl`` after the broker's delivery limit, a repeated AMQP
message-id is dropped with no second answer, and the broker going away mid-flow loses and doubles nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.errors import KeyUnavailable
from gateway.testing.rabbit import DELIVERY_LIMIT, Broker
from gateway.transport import InboundResult, Packet

from ..region import ADMIN, fixture_bytes, with_msg_id
from .amqp_region import all_acknowledged, amqp_region
from .raw import nothing_on, peer_message, put, take
from .test_amqp_bus import EPIKRISE, GP, STOLAV


async def test_a_message_the_gateway_cannot_take_now_waits_and_is_taken_later(tmp_path: Path, broker: Broker) -> None:
    """A key not in place yet (retryable): no error report, the message is given back and taken once it can be."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r:
        seen: list[str] = []
        receive = r.hub.inbound.receive

        async def not_yet(packet: Packet, **kw: Any) -> InboundResult:
            seen.append(packet.message_id)
            if len(seen) < 3:
                return InboundResult.refused(KeyUnavailable("the GP's decryption key is not in place yet"))
            return await receive(packet, **kw)

        r.hub.inbound.receive = not_yet  # type: ignore[method-assign]
        body = r.stolav.protection.protect(fixture_bytes(EPIKRISE), sender_her=STOLAV, receiver_her=GP)
        sent = peer_message(body, from_her=STOLAV, to_her=GP)
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", sent)

        async def in_inbox() -> bool:
            return len(await r.hub.store.inbox(GP)) == 1

        await r.until(in_inbox, what="the epikrise in the GP's inbox")
        assert seen == [sent.id] * 3  # the same AMQP message, given back twice
        assert await nothing_on(broker, r.vhost, f"{STOLAV}_error")


async def test_a_message_that_keeps_failing_ends_in_dl_after_the_delivery_limit(tmp_path: Path, broker: Broker) -> None:
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r:
        calls: list[str] = []

        async def broken(packet: Packet, **kw: Any) -> InboundResult:
            calls.append(packet.message_id)
            raise RuntimeError("a bug")

        r.hub.inbound.receive = broken  # type: ignore[method-assign]
        sent = peer_message(b"any", from_her=STOLAV, to_her=GP)
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", sent)
        dead = await take(broker, r.vhost, f"{GP}_dl", within_s=120)
        assert dead.id == sent.id
        assert len(calls) >= DELIVERY_LIMIT and set(calls) == {sent.id}
        assert await nothing_on(broker, r.vhost, f"{STOLAV}_error")  # no report for our own failure


async def test_a_repeated_message_id_is_dropped_and_answered_once(tmp_path: Path, broker: Broker) -> None:
    """The second copy never reaches the inbound pipeline (whose own duplicate check by MsgId would also
    keep the inbox and the AppRec single)."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r:
        judged: list[str] = []
        receive = r.hub.inbound.receive

        async def counted(packet: Packet, **kw: Any) -> InboundResult:
            judged.append(packet.message_id)
            return await receive(packet, **kw)

        r.hub.inbound.receive = counted  # type: ignore[method-assign]
        body = r.stolav.protection.protect(fixture_bytes(EPIKRISE), sender_her=STOLAV, receiver_her=GP)
        sent = peer_message(body, from_her=STOLAV, to_her=GP)
        for _ in range(2):
            await put(broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", sent)

        async def answered() -> bool:
            await r.hub.worker.drain()
            return len(await r.hub.store.inbox(GP)) == 1

        await r.until(answered, what="the epikrise in the GP's inbox")
        apprec = await take(broker, r.vhost, f"{STOLAV}_async")
        assert apprec.subject == "APPREC" and apprec.properties["toHerId"] == STOLAV
        for _ in range(3):
            await r.hub.worker.drain()
        assert await nothing_on(broker, r.vhost, f"{STOLAV}_async")  # one AppRec, not two
        assert len(await r.hub.store.inbox(GP)) == 1
        assert judged == [sent.id]


async def test_the_broker_going_away_mid_flow_loses_and_doubles_nothing(tmp_path: Path, broker: Broker) -> None:
    """St. Olavs sends 20 epikriser while the broker restarts, and 10 more while it is away: each reaches
    the GP's inbox once and every delivery is settled by its AppRec."""
    async with amqp_region(tmp_path, broker) as r:
        records = []

        async def submit(count: int) -> None:
            for _ in range(count):
                record, _ = await r.stolav.submit(with_msg_id(fixture_bytes(EPIKRISE)), ADMIN)
                records.append(record)

        await submit(20)
        restart = asyncio.create_task(asyncio.to_thread(broker.restart))  # while both sides send and receive
        bus = r.stolav.transports["amqp"].bus  # type: ignore[attr-defined]

        async def away() -> bool:
            return bus.disconnects > 0

        await r.until(away, what="the broker gone")
        await submit(10)

        async def all_settled() -> bool:
            return await all_acknowledged(r.stolav, [record.id for record in records])

        await r.until(all_settled, what="every delivery settled by its AppRec", within_s=300)
        await restart
        inbox = await r.hub.store.inbox(GP)
        assert sorted(m.msg_id for m in inbox) == sorted(rec.msg_id for rec in records)  # each once


async def test_the_operator_sees_a_dead_letter_and_puts_it_back(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gateway bus dead-letters` lists what died (no body), listing leaves it there, and `gateway bus
    requeue` puts it back on the queue it died on - where, the failure mended, it is taken."""
    async with amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as r:
        receive = r.hub.inbound.receive

        async def broken(packet: Packet, **kw: Any) -> InboundResult:
            raise RuntimeError("a bug")

        r.hub.inbound.receive = broken  # type: ignore[method-assign]
        body = r.stolav.protection.protect(fixture_bytes(EPIKRISE), sender_her=STOLAV, receiver_her=GP)
        sent = peer_message(body, from_her=STOLAV, to_her=GP)
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", sent)
        config = tmp_path / "bus.toml"
        config.write_text(
            f'[adapters.amqp]\nurl = "{broker.amqp_url}"\nnamespace = "{r.namespace}"\n'
            f'virtual_host = "vhost:{r.vhost}"\n',
            encoding="utf-8",
        )

        async def listed() -> list[str]:
            capsys.readouterr()
            assert await asyncio.to_thread(main, ["bus", "dead-letters", GP, "--config", str(config)]) == 0
            return [line for line in capsys.readouterr().out.splitlines() if line.startswith(sent.id)]

        async def dead() -> bool:
            return bool(await listed())

        await r.until(dead, what="the message in the GP's dead letters", within_s=180)
        again: list[str] = []

        async def still_there() -> bool:  # seeing it did not take it
            again[:] = await listed()
            return bool(again)

        await r.until(still_there, what="the dead letter listed again")
        assert f"{GP}_async\t{STOLAV}->{GP}\tEPIKRISE" in again[0]
        r.hub.inbound.receive = receive  # type: ignore[method-assign]
        assert await asyncio.to_thread(main, ["bus", "requeue", GP, "--id", sent.id, "--config", str(config)]) == 0
        assert "1 re-queued" in capsys.readouterr().out

        async def in_inbox() -> bool:
            return len(await r.hub.store.inbox(GP)) == 1

        await r.until(in_inbox, what="the re-queued epikrise in the GP's inbox")
        assert await nothing_on(broker, r.vhost, f"{GP}_dl")


async def test_packets_that_do_not_verify_do_not_hold_up_a_good_message(tmp_path: Path, broker: Broker) -> None:
    """Each packet that does not verify is answered no sooner than ``unverified_answer_s`` (docs/security.md);
    handled one at a time, three of them would keep the epikrise behind them waiting 15 minutes. Handled side
    by side (``receive_concurrency``), the epikrise is in the inbox while the three still wait for their
    answer."""
    region = amqp_region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[], unverified_answer_s=300.0)
    async with region as r:
        to_gp = f"/exchange/{r.namespace}/{GP}_async"
        for _ in range(3):
            await put(broker, r.vhost, to_gp, peer_message(b"\x30\x80 not CMS", from_her=STOLAV, to_her=GP))
        body = r.stolav.protection.protect(with_msg_id(fixture_bytes(EPIKRISE)), sender_her=STOLAV, receiver_her=GP)
        await put(broker, r.vhost, to_gp, peer_message(body, from_her=STOLAV, to_her=GP))

        async def in_inbox() -> bool:
            return bool(await r.hub.store.inbox(GP))

        await r.until(in_inbox, what="the epikrise in the GP's inbox")
        assert await nothing_on(broker, r.vhost, f"{STOLAV}_error", for_s=1.0)  # the three still wait

"""What NHN's faults come to: an expired token and a rotated DPoP nonce are got over, a dropped SSE stream is
resumed from the stored offset with nothing taken twice, and 403, 423, 429, 5xx and an oversize document
each end as the documented outcome."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from adapters.edi2.transport import Edi2Transport
from gateway.clock import ManualClock
from gateway.errors import ChannelLocked
from gateway.store.base import DeliveryState
from gateway.testing.nhn.msh_state import Configuration
from gateway.transport import Packet

from ..region import ADMIN, fixture_bytes, with_msg_id
from .nhn_region import CLIENT_ID, NhnRegion, nhn_region

TO_STOLAV = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> 7200101, copy to LiO
EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # 7200101 -> GP 7102001, copy to Frøya
STOLAV, GP, SKAUN, FROYA = "7200101", "7102001", "7100701", "7100101"


async def _remote(r: NhnRegion, message_id: str):  # type: ignore[no-untyped-def]
    view = await r.hub.store.get(message_id)
    assert view is not None
    return next(d for d in view.deliveries if d.receiver_her == STOLAV)


async def _acknowledged(r: NhnRegion, message_id: str) -> None:
    async def done() -> bool:
        return (await _remote(r, message_id)).state == DeliveryState.ACKNOWLEDGED

    await r.until(done, what="the delivery to St. Olavs acknowledged")


class TestAuthentication:
    async def test_expired_token_and_rotated_nonce_are_got_over(self, tmp_path: Path) -> None:
        """NHN says the token has expired (401) while HelseID has moved its DPoP nonce on twice: one token
        refresh, a new nonce exchange, and the message goes - no error reaches the queue."""
        async with nhn_region(tmp_path) as r:
            first, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)
            await _acknowledged(r, first.id)
            issued = r.helseid.tokens_issued
            r.sim.faults.expire_token(times=1, path="/messages", method="POST")
            r.helseid.nonces.rotate()
            r.helseid.nonces.rotate()
            second, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)
            await _acknowledged(r, second.id)
            assert r.helseid.tokens_issued == issued + 1
            assert (await _remote(r, second.id)).attempts == 1  # got over inside one attempt


    async def test_a_refusing_helseid_holds_messages_back_it_does_not_kill_them(self, tmp_path: Path) -> None:
        """HelseID refuses the client (400: a clock out of step, a key rolled over): the delivery waits with the
        reason (retried past max_attempts - only its time to live bounds it) and St. Olavs' route is not
        marked down for our credential problem; once HelseID answers again, the message goes."""
        async with nhn_region(tmp_path, sections={"retry": {"max_attempts": 3}}) as r:
            r.helseid.fail_next(1_000_000, status=400)
            r.sim.faults.expire_token(times=1)  # whoever calls next finds the token gone, and asks for a new one
            record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)
            clock = r.hub.clock
            assert isinstance(clock, ManualClock)
            for _ in range(7):  # more failures than the breaker's threshold (5)
                await r.hub.worker.drain()
                remote = await _remote(r, record.id)
                assert remote.state == DeliveryState.RETRYING
                assert remote.last_error_code == "delivery.authentication_refused"
                clock.advance(7200)
            assert not r.hub.worker.breaker.is_open(STOLAV)
            r.helseid.recover()

            async def acknowledged() -> bool:  # the client asks HelseID again after a short pause (wall time)
                clock.advance(60)
                return (await _remote(r, record.id)).state == DeliveryState.ACKNOWLEDGED

            await r.until(acknowledged, what="the message through once HelseID takes the client again")


class TestStream:
    async def test_a_dropped_stream_is_resumed_from_the_stored_offset(self, tmp_path: Path) -> None:
        """SSE: the stream is cut after one event, three times; every epikrise St. Olavs sends reaches the
        inbox exactly once, and the offset kept in the store is the last one processed."""
        async with nhn_region(tmp_path, receive="stream") as r:
            r.sim.faults.drop_stream(after_events=1, times=3)
            r.sim.faults.duplicate_notifications(2)
            sent = [r.sim.network.send(STOLAV, with_msg_id(fixture_bytes(EPIKRISE)), to=[GP]) for _ in range(4)]

            async def all_in() -> bool:
                return len(await r.hub.store.inbox(GP)) == len(sent)

            await r.until(all_in, what="four epikriser in the GP's inbox")
            inbox = await r.hub.store.inbox(GP)
            assert sorted(m.msg_id or "" for m in inbox) == sorted(s.info.msg_id or "" for s in sent)
            local = frozenset(p.her_id for p in r.hub.register.local_parties)

            async def caught_up() -> bool:  # the AppRecs' own notifications come in after the messages
                stored = await r.hub.store.get_meta("adapter:edi2:offset")
                notes, _ = r.sim.state.log.read(local, 0, 10_000)
                return stored is not None and int(stored) == max(n.offset for n in notes)

            await r.until(caught_up, what="the stored offset at the log's last notification for our HER-ids")
            assert any("drop_stream" in applied for applied in r.sim.faults.applied)


class TestRefusals:
    async def test_429_and_5xx_are_retried_after_nhns_retry_after(self, tmp_path: Path) -> None:
        async with nhn_region(tmp_path) as r:
            r.sim.faults.rate_limit(retry_after=120, times=1, path="/messages", method="POST")
            record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)
            await r.hub.worker.drain()
            remote = await _remote(r, record.id)
            assert remote.state == DeliveryState.RETRYING and remote.next_attempt_at is not None
            assert remote.next_attempt_at - r.hub.clock.now() >= 120
            r.sim.faults.fail(503, times=1, path="/messages", method="POST")
            r.hub.clock.advance(121)  # type: ignore[attr-defined]
            await r.hub.worker.drain()
            assert (await _remote(r, record.id)).state == DeliveryState.RETRYING  # the 503: again later
            r.hub.clock.advance(3600)  # type: ignore[attr-defined]
            await _acknowledged(r, record.id)

    async def test_403_is_retried_and_said_to_the_operator(self, tmp_path: Path) -> None:
        """The HelseID client may not act for Skaun: NHN answers 403; the delivery waits (retried) with the
        reason in plain words, so it flows once the delegation is fixed."""
        async with nhn_region(tmp_path, her_ids=frozenset({"7102001"})) as r:
            record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)
            await r.hub.worker.drain()
            remote = await _remote(r, record.id)
            assert remote.state == DeliveryState.RETRYING
            assert remote.last_error_code == "delivery.not_authorized" and "HER" in (remote.last_error or "")

    async def test_423_holds_back_the_locked_her_id_only(self, tmp_path: Path) -> None:
        """Another HelseID client holds Skaun's configuration locked at NHN: what Skaun sends waits (retried,
        one loud line), the rest of the region goes on and no route is paused or broken; once the other client
        lets go, the receive loop declares Skaun again and its message goes."""
        async with nhn_region(tmp_path, adapter_options={"locked_recheck_s": 0}) as r:
            r.sim.state.configurations[SKAUN] = Configuration(SKAUN, locked_by="old-epj-integration")
            held, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)
            from_froya = fixture_bytes(TO_STOLAV).replace(SKAUN.encode(), FROYA.encode())
            other, _ = await r.hub.submit(with_msg_id(from_froya.replace(b"7100700", b"7100100")), ADMIN)
            await r.hub.worker.drain()
            waiting = await _remote(r, held.id)
            assert waiting.state == DeliveryState.RETRYING and waiting.last_error_code == "delivery.channel_locked"
            await _acknowledged(r, other.id)  # the same receiver, from a HER-id that is not locked
            for _ in range(3):  # Skaun's next attempts do not go to NHN while it is held: still one refusal
                clock = r.hub.clock
                assert isinstance(clock, ManualClock)
                clock.advance(3600)
                await r.hub.worker.drain()
            assert (await _remote(r, held.id)).state == DeliveryState.RETRYING
            assert not [x for x in await r.hub.store.routes() if x.paused]
            assert not any(m.sender == SKAUN for m in r.sim.state.messages.values())

            del r.sim.state.configurations[SKAUN]  # the other client let go

            async def released() -> bool:
                return (c := r.sim.state.configurations.get(SKAUN)) is not None and c.locked_by == CLIENT_ID

            await r.until(released, what="the hub declares Skaun again")
            clock.advance(3600)
            await _acknowledged(r, held.id)

    async def test_a_her_id_held_for_a_while_gets_what_came_for_it_meanwhile(self, tmp_path: Path) -> None:
        """The GP's HER-id is held by another client while St. Olavs writes to it: the hub follows the rest of
        the region meanwhile (Frøya's copy comes in), and once the GP's HER-id is ours again, what came for it
        in between is read for it - nothing passed over."""
        async with nhn_region(tmp_path, adapter_options={"locked_recheck_s": 0}) as r:
            r.sim.state.configurations[GP] = Configuration(GP, locked_by="old-epj-integration")
            meanwhile = r.sim.network.send(STOLAV, with_msg_id(fixture_bytes(EPIKRISE)), to=[GP])
            to_froya = r.sim.network.send(STOLAV, with_msg_id(fixture_bytes(EPIKRISE)), to=[FROYA])

            gp_note = min(n.offset for n in r.sim.state.log.read(frozenset({GP}), 0, 100)[0])

            async def stored_offset() -> int:
                return int(await r.hub.store.get_meta("adapter:edi2:offset") or 0)

            async def froya_has_it() -> bool:  # (the offset is stored after the message: wait for both)
                got = [m.msg_id for m in await r.hub.store.inbox(FROYA)] == [to_froya.info.msg_id]
                return got and await stored_offset() > gp_note

            await r.until(froya_has_it, what="Frøya's copy while the GP's HER-id is held, the log read past it")
            assert await stored_offset() > gp_note  # past the GP's notification
            assert await r.hub.store.inbox(GP) == []

            del r.sim.state.configurations[GP]  # the other client let go

            async def gp_has_it() -> bool:  # (the catch-up is forgotten after the message is stored: wait for both)
                got = [m.msg_id for m in await r.hub.store.inbox(GP)] == [meanwhile.info.msg_id]
                return got and await r.hub.store.get_meta("adapter:edi2:catch_up") is None

            await r.until(gp_has_it, what="the epikrise that came for the GP while its HER-id was held, caught up")
            assert [m.msg_id for m in await r.hub.store.inbox(GP)] == [meanwhile.info.msg_id]  # once

    async def test_validation_400_is_dead_with_nhns_reasons(self, tmp_path: Path) -> None:
        async with nhn_region(tmp_path) as r:
            r.sim.faults.fail(400, times=1, path="/messages", method="POST")
            record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)
            await r.hub.worker.drain()
            remote = await _remote(r, record.id)
            assert remote.state == DeliveryState.DEAD and "400" in (remote.last_error or "")

    async def test_a_document_over_nhns_limit_is_refused_before_sending(self, tmp_path: Path) -> None:
        async with nhn_region(tmp_path) as r:
            transport = r.hub.transports["edi2"]
            huge = b'<?xml version="1.0" encoding="UTF-8"?><x>' + b"a" * (27 * 1024 * 1024) + b"</x>"
            before = len(r.sim.state.messages)
            try:
                await transport.send(Packet(huge, "t", "7100701", STOLAV, "application/xml", "X", reference="m"))
            except Exception as exc:
                assert type(exc).__name__ == "PermanentDeliveryError" and "35 MB" in str(exc)
            else:
                raise AssertionError("an oversize document was sent")
            assert len(r.sim.state.messages) == before


class TestStartUp:
    async def test_a_send_before_the_receive_loop_has_configured_waits_for_the_configuration(
        self, tmp_path: Path
    ) -> None:
        """NHN refuses requests for a HER-id it has no configuration for (400, which would kill the delivery):
        a transport that sends before its receive loop has run declares the HER-ids first."""
        async with nhn_region(tmp_path) as r:
            started = r.hub.transports["edi2"]
            for her_id in ("7100701", "7102001"):  # as if the hub had never declared them
                r.sim.state.configurations.pop(her_id, None)
            fresh = Edi2Transport(dataclasses.replace(started.context, local_her_ids=("7100701", "7102001")))
            try:
                body = with_msg_id(fixture_bytes(TO_STOLAV))
                packet = Packet(body, "t", "7100701", STOLAV, "application/xml", "INNLEGGELSESRAPPORT", reference="m-1")
                await fresh.send(packet)
            finally:
                await fresh.aclose()
            assert any(m.sender == "7100701" for m in r.sim.state.messages.values())

    async def test_a_her_id_locked_at_start_is_left_out_and_the_rest_are_declared(self, tmp_path: Path) -> None:
        """NHN refuses the whole declaration when one HER-id is held by another client (423): the transport
        finds which one and goes on with the rest - a send from it is refused without troubling NHN."""
        async with nhn_region(tmp_path) as r:
            started = r.hub.transports["edi2"]
            r.sim.state.configurations.clear()
            r.sim.state.configurations[SKAUN] = Configuration(SKAUN, locked_by="old-epj-integration")
            fresh = Edi2Transport(dataclasses.replace(started.context, local_her_ids=(SKAUN, GP)))
            body = with_msg_id(fixture_bytes(TO_STOLAV))
            try:
                with pytest.raises(ChannelLocked, match="7100701"):
                    await fresh.send(Packet(body, "t", SKAUN, STOLAV, "application/xml", "X", reference="m-1"))
                assert GP in r.sim.state.configurations  # declared, though Skaun could not be
                assert r.sim.state.configurations[SKAUN].locked_by == "old-epj-integration"
                sent_before = len(r.sim.state.messages)
                with pytest.raises(ChannelLocked):  # known to be held: not asked again
                    await fresh.send(Packet(body, "t", SKAUN, STOLAV, "application/xml", "X", reference="m-1"))
                assert len(r.sim.state.messages) == sent_before
            finally:
                await fresh.aclose()

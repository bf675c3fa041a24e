"""A receiver whose certificate has expired: no retries, dead at once with S02; an operator retries it
once the certificate is replaced, and it is delivered."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from gateway.security.devpki import DevCa, party_subject, write_certificate
from gateway.store.base import DeliveryState, MessageState
from gateway.transport import InboundResult, Packet

from .region import ADMIN, fixture_bytes, region

TEMPLATE = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> St. Olavs (+ LiO)
STOLAV = "7200101"


def reissue_encryption_cert(pki: Path, party, *, expired: bool) -> None:  # type: ignore[no-untyped-def]
    """Give the party a new encryption certificate for its existing key: expired yesterday, or valid."""
    ca = DevCa.load(pki)
    key = serialization.load_pem_private_key((pki / party.her_id / "enc.key").read_bytes(), password=None)
    now = datetime.now(UTC)
    window = (now - timedelta(days=400), now - timedelta(days=1)) if expired else (now - timedelta(hours=1), None)
    cert, _ = ca.issue(
        party_subject(party, "encrypt"),
        purpose="encrypt",
        key=key,  # type: ignore[arg-type]
        not_before=window[0],
        not_after=window[1],
    )
    write_certificate(pki / party.her_id / "enc.crt", cert)


async def test_expired_receiver_certificate_is_dead_at_once_then_retried(tmp_path: Path) -> None:
    """S02 on the first attempt, no retry; after the certificate is replaced an operator's retry delivers it."""
    async with region(tmp_path, protection="cms") as r:
        party = r.hub.register.get(STOLAV)
        assert party is not None
    reissue_encryption_cert(tmp_path / "pki", party, expired=True)
    async with region(tmp_path, protection="cms") as r:
        record, _ = await r.hub.submit(fixture_bytes(TEMPLATE), ADMIN)
        await r.drain()
        r.clock.advance(3600)  # an hour later: still no retry
        await r.drain()
        view = await r.hub.store.get(record.id)
        assert view is not None
        remote = next(d for d in view.deliveries if d.receiver_her == STOLAV)
        assert remote.state == DeliveryState.DEAD and remote.attempts == 1
        assert remote.last_error_code == "S02" and "expired" in (remote.last_error or "").lower()
        assert view.message.state == MessageState.DEAD
        assert await r.hub.store.payload(record.id) == fixture_bytes(TEMPLATE)  # the dead letter keeps it
    # the operator replaces the certificate and retries the dead letter on the stopped gateway
    reissue_encryption_cert(tmp_path / "pki", party, expired=False)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "queue", "--data-dir", str(tmp_path / "hub"), "retry", record.id],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    async with region(tmp_path, protection="cms") as r:
        await r.drain()
        view = await r.hub.store.get(record.id)
        assert view is not None
        remote = next(d for d in view.deliveries if d.receiver_her == STOLAV)
        assert remote.state == DeliveryState.ACKNOWLEDGED
        retried = [t for t in view.trace if t.event == "operator.retry"]
        assert len(retried) == 1 and (retried[0].actor or "").startswith("cli:")


async def test_peer_refusal_is_dead_at_once_with_the_peers_code_and_condition(tmp_path: Path) -> None:
    """A peer that refuses the packet for good: no retry, and the dead letter says what the peer said."""
    async with region(tmp_path) as r:
        answers: list[str] = []

        async def refusing(packet: Packet) -> InboundResult:
            answers.append(packet.message_id)
            return InboundResult(False, condition="transport:decryption-failed", code="S01", message="cannot open")

        r.network.attach("memory://stolav", refusing)
        record, _ = await r.hub.submit(fixture_bytes(TEMPLATE), ADMIN)
        await r.drain()
        r.clock.advance(3600)
        await r.drain()
        view = await r.hub.store.get(record.id)
        assert view is not None
        remote = next(d for d in view.deliveries if d.receiver_her == STOLAV)
        assert remote.state == DeliveryState.DEAD and remote.attempts == 1 and len(answers) == 1
        assert remote.last_error_code == "S01"
        assert "transport:decryption-failed" in (remote.last_error or "")

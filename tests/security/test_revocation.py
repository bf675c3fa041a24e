"""Revocation: the CRL cache read on the message path, refreshed from files and URLs by the scheduler."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from gateway.errors import CertificateRevoked, RevocationUnavailable
from gateway.security.devpki import DevCa, reissue_crl, revoke
from tests.security.conftest import FROYA, HITRA, STOLAV, XML, World

CRL_URL = "http://crl.test.invalid/sio-dev-ca.crl"


class FakeCrlServer:
    """An injected fetcher with a switch: serves the dev CA's CRL file, or fails like a dead server."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.down = False
        self.hang_s = 0.0
        self.calls: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.calls.append(url)
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if self.down:
            raise ConnectionRefusedError(f"cannot reach {url}")
        return (self.world.pki / "ca.crl").read_bytes()


@pytest.fixture(name="server")
def _server(world: World) -> FakeCrlServer:
    return FakeCrlServer(world)


class TestCrlFromUrl:
    async def test_unreachable_crl_is_temporary(self, world: World, server: FakeCrlServer) -> None:
        """CRL URL down and nothing cached: RevocationUnavailable, retryable, revoked-certificate-offline."""
        packet = world.protection().protect(XML, sender_her=HITRA, receiver_her=FROYA)
        protection = world.protection(crls=(CRL_URL,))
        server.down = True
        await protection.refresh_crls(server.fetch)
        with pytest.raises(RevocationUnavailable, match="cannot reach") as caught:
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
        assert caught.value.retryable is True
        assert caught.value.transport_condition == "transport:revoked-certificate-offline"
        assert server.calls == [CRL_URL]

    async def test_slow_crl_server_times_out(self, world: World, server: FakeCrlServer) -> None:
        """A fetch slower than crl_timeout_s counts as unavailable, and the refresh returns promptly."""
        protection = world.protection(crls=(CRL_URL,), crl_timeout_s=0.05)
        server.hang_s = 5.0
        await asyncio.wait_for(protection.refresh_crls(server.fetch), 2.0)
        with pytest.raises(RevocationUnavailable, match="took longer"):
            protection.protect(XML, sender_her=FROYA, receiver_her=STOLAV)

    async def test_fetched_crl_is_used_and_kept_when_the_server_dies(self, world: World, server: FakeCrlServer) -> None:
        """After one good fetch, a failed refresh keeps the last CRL: messages still go, the status says why."""
        protection = world.protection(crls=(CRL_URL,))
        await protection.refresh_crls(server.fetch)
        packet = protection.protect(XML, sender_her=FROYA, receiver_her=HITRA)
        server.down = True
        with capture_logs() as logs:
            await protection.refresh_crls(server.fetch)
        assert protection.unprotect(packet, receiver_her=HITRA, claimed_sender_her=FROYA).content == XML
        (status,) = protection.crl_status()
        assert status.next_update is not None and status.error is not None and "cannot reach" in status.error
        assert [e["code"] for e in logs if e["log_level"] == "warning"] == ["security.crl_unavailable"]

    async def test_refresh_picks_up_a_revocation(self, world: World, server: FakeCrlServer) -> None:
        """A certificate revoked after start-up is refused once the scheduler has refreshed the CRL."""
        protection = world.protection(crls=(CRL_URL,))
        await protection.refresh_crls(server.fetch)
        packet = protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)
        revoke(world.pki, world.pair(HITRA, "sign").ref.cert)
        assert protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA).content == XML
        await protection.refresh_crls(server.fetch)
        revoked = protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA).untrusted
        assert isinstance(revoked, CertificateRevoked) and CRL_URL in revoked.message


class TestCrlFromFile:
    async def test_refresh_rereads_files(self, world: World) -> None:
        """File CRLs are re-read by refresh too; the fetcher is not called for them."""
        protection = world.protection()
        packet = protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)
        revoke(world.pki, world.pair(HITRA, "sign").ref.cert)

        async def no_network(url: str) -> bytes:
            raise AssertionError(f"no URL is configured, yet {url} was fetched")

        await protection.refresh_crls(no_network)
        revoked = protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA).untrusted
        assert isinstance(revoked, CertificateRevoked)

    def test_crl_past_next_update_is_temporary(self, protection_at_week_end: tuple[World, datetime]) -> None:
        """A CRL past its nextUpdate with no fresher one: RevocationUnavailable naming when it expired."""
        world, later = protection_at_week_end
        with pytest.raises(RevocationUnavailable, match="expired at"):
            world.protection().protect(XML, sender_her=FROYA, receiver_her=STOLAV, at=later)

    def test_missing_crl_file_is_temporary(self, world: World) -> None:
        """No CRL file where configured: RevocationUnavailable naming the file."""
        (world.pki / "ca.crl").unlink()
        with pytest.raises(RevocationUnavailable, match=r"ca\.crl"):
            world.protection().protect(XML, sender_her=FROYA, receiver_her=STOLAV)

    def test_crl_signed_by_another_ca_is_ignored(self, world: World) -> None:
        """A CRL with the right issuer name but a foreign signature does not count: RevocationUnavailable."""
        impostor = DevCa(DevCa.load(world.pki).cert, DevCa.create().key)
        (world.pki / "ca.crl").write_bytes(impostor.crl().public_bytes(serialization.Encoding.PEM))
        with pytest.raises(RevocationUnavailable, match="No CRL signed by"):
            world.protection().protect(XML, sender_her=FROYA, receiver_her=STOLAV)

    def test_no_crls_configured_switches_revocation_off(self, world: World) -> None:
        """With security.crls empty nothing is checked for revocation, and start-up warns about it."""
        revoke(world.pki, world.pair(HITRA, "sign").ref.cert)
        with capture_logs() as logs:
            protection = world.protection(crls=())
        packet = protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)
        assert protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA).content == XML
        assert "security.revocation_off" in [e["code"] for e in logs]


@pytest.fixture(name="protection_at_week_end")
def _protection_at_week_end(world: World) -> tuple[World, datetime]:
    """The world, and a time just after its CRL's nextUpdate (certificates still valid then)."""
    crl = reissue_crl(world.pki, next_update=datetime.now(UTC) + timedelta(days=7))
    assert crl.next_update_utc is not None
    return world, crl.next_update_utc + timedelta(hours=1)

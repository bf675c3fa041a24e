"""The receiving side with CMS on: a message whose signer's own certificate is no longer trusted is answered
S03 (S02/S03 get a negative AppRec), a spoofed one is refused without an answer (tests/test_hostile_peer.py
has the rest of what a hostile peer gets)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cryptography import x509

from adapters.memory import MemoryNetwork
from gateway.clock import ManualClock
from gateway.config import PROJECT_ROOT
from gateway.errors import KeyUnavailable
from gateway.registry import load_register
from gateway.replay import mirror_regions
from gateway.security.devpki import revoke
from gateway.security.protection import NoProtection
from gateway.service import Gateway
from gateway.store.base import DeliveryState
from gateway.transport import Packet

from .region import ADMIN, fixture_bytes, settings_for, shared_pki

EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # St. Olavs -> GP, copy to Frøya


def build(tmp_path: Path, *, unverified_answer_s: float = 0.0) -> tuple[Gateway, Gateway, MemoryNetwork, Path]:
    """The hub and St. Olavs over the memory adapter with CMS on (unverified packets answered at once,
    unless a test is about that floor)."""
    base = load_register(PROJECT_ROOT / "config" / "sio-region.toml")
    pki = shared_pki(tmp_path, base)
    hub_reg, st_reg = mirror_regions(
        base, hub_endpoint="memory://hub", stolav_endpoint="memory://stolav", adapter="memory", pki=pki
    )
    network = MemoryNetwork()
    security: dict[str, Any] = {
        "protection": "cms",
        "trust_anchors": (pki / "ca.crt",),
        "crls": (str(pki / "ca.crl"),),
        "unverified_answer_s": unverified_answer_s,
    }
    clock = ManualClock()
    hub = Gateway(
        settings_for(tmp_path / "hub", security=security),
        register=hub_reg,
        clock=clock,
        adapter_options={"memory": {"network": network, "address": "memory://hub"}},
    )
    stolav = Gateway(
        settings_for(tmp_path / "stolav", security=security),
        register=st_reg,
        clock=clock,
        adapter_options={"memory": {"network": network, "address": "memory://stolav"}},
    )
    return hub, stolav, network, pki


async def test_revoked_signer_is_answered_s03(tmp_path: Path) -> None:
    """St. Olavs signs with a certificate the hub's CRL now lists: the hub stores it rejected and answers S03."""
    hub, stolav, _network, pki = build(tmp_path)
    async with stolav:  # St. Olavs loaded the CRL before the revocation
        revoke(pki, x509.load_pem_x509_certificate((pki / "7200101" / "sign.crt").read_bytes()))
        async with hub:
            record, _ = await stolav.submit(fixture_bytes(EPIKRISE), ADMIN)
            for _ in range(5):
                await stolav.worker.drain()
                await hub.worker.drain()
            view = await stolav.store.get(record.id)
            assert view is not None
            assert {d.state for d in view.deliveries} == {DeliveryState.REJECTED}
            assert {d.apprec.errors[0][0] for d in view.deliveries if d.apprec} == {"S03"}
            rejected = await hub.store.list_messages(direction="in", state="rejected", kind="epikrise-1.2")
            assert len(rejected.items) == 2 and {m.error_code for m in rejected.items} == {"S03"}


async def test_spoofed_sender_is_refused_unanswered(tmp_path: Path) -> None:
    """A packet signed by the lab but claiming to come from the medical department: refused, never answered."""
    hub, stolav, _network, _pki = build(tmp_path)
    async with stolav, hub:
        body = fixture_bytes(EPIKRISE)
        forged = stolav.protection.protect(body, sender_her="7200201", receiver_her="7102001")
        packet = Packet(forged, "t", "7200101", "7102001", stolav.protection.content_type, "EPIKRISE")
        result = await hub.receive(packet, via="memory")
        assert not result.accepted and result.condition == "transport:invalid-cms-pkcs"
        assert result.reference is None and await hub.store.counts() == {}  # nothing stored, nothing answered
        (refusal,) = await hub.store.refusals()
        assert (refusal.cause, refusal.claimed_sender) == ("security.spoofing_attack", "7200101")
        # and the honest one goes through
        honest = dataclasses.replace(
            packet, body=stolav.protection.protect(body, sender_her="7200101", receiver_her="7102001")
        )
        assert (await hub.receive(honest, via="memory")).accepted


async def test_unknown_service_of_our_organisation_is_answered_e21(tmp_path: Path) -> None:
    """Encrypted to one of our certificates but addressed to a service the register does not list: E21,
    answered by a local party of that organisation in its own name."""
    hub, stolav, _network, _pki = build(tmp_path)
    async with stolav, hub:
        body = fixture_bytes(EPIKRISE).replace(b"<Id>7102001</Id>", b"<Id>7102009</Id>")  # unknown GP service
        forged = stolav.protection.protect(body, sender_her="7200101", receiver_her="7102001")  # GP's certificate
        result = await hub.receive(
            Packet(forged, "t", "7200101", "7102009", stolav.protection.content_type, ""), via="memory"
        )
        assert result.accepted and result.code == "E21"
        view = await hub.store.get(result.reference or "")
        assert view is not None and view.message.receiver_her == "7102001"  # answered by the GP office's party
        apprec_id = next(t.detail["apprec_message_id"] for t in view.trace if t.event == "apprec.queued")
        apprec = await hub.store.payload(apprec_id)
        assert apprec is not None and b'V="E21"' in apprec and b"<Id>7102001</Id>" in apprec


class KeylessProtection(NoProtection):
    """A gateway whose key for the receiving party is not in place (the dev layout with files missing)."""

    def unprotect(self, packet: bytes, *, receiver_her: str, claimed_sender_her: str, at: Any = None) -> Any:
        raise KeyUnavailable(f"No decryption key for {receiver_her}: pki/{receiver_her}/enc.key is missing.")


async def test_missing_local_key_asks_the_peer_to_wait(tmp_path: Path) -> None:
    """A local party whose key is missing is our problem: 'retry later', so the peer keeps the packet."""
    settings = settings_for(tmp_path, security={"protection": "none"})
    async with Gateway(settings, protection=KeylessProtection()) as hub:
        result = await hub.receive(Packet(b"...", "t", "7200101", "7102001", "application/pkcs7-mime", ""), via="http")
        assert not result.accepted and result.retry_later and result.event == "security.key_unavailable"
        assert await hub.store.counts() == {}  # nothing stored: the peer still has it

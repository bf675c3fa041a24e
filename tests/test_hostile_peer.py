"""What a hostile peer on the health network gets out of the transport endpoint: one answer for everything
it cannot prove, no plaintext, no say over the real sender's messages, and bounded storage.

The hub with CMS on, its real aiohttp app (``POST /transport/http``) and a St. Olavs gateway whose keys
play both the honest peer and - through CBC's malleability - the attacker who holds a captured packet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from asn1crypto import cms as acms
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from structlog.testing import capture_logs

from gateway.api.app import create_app
from gateway.security.cms import encrypt
from gateway.security.devpki import DevCa, party_subject
from gateway.service import Gateway
from gateway.store.base import MessageState
from gateway.transport import Packet

from .region import fixture_bytes, with_msg_id
from .test_pipeline_cms import build

SVARRAPPORT = "svarrapport-1.4/svar-lab-biokjemi-latin1.xml"  # the lab (7200201) -> the GP (7102001), ISO-8859-1
EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # medisinsk (7200101) -> GP, copy to Frøya
PATIENT_ID = "03895741581"  # the synthetic patient's national id in SVARRAPPORT
LAB, GP = "7200201", "7102001"


@dataclass
class Peers:
    hub: Gateway
    stolav: Gateway
    client: TestClient

    def packet(self, body: bytes, *, sender: str = LAB, receiver: str = GP) -> bytes:
        return self.stolav.protection.protect(body, sender_her=sender, receiver_her=receiver)

    async def post(self, packet: bytes, *, sender: str = LAB, receiver: str = GP) -> tuple[int, bytes]:
        headers = {
            "X-Message-Id": str(uuid.uuid4()),
            "X-From-Her-Id": sender,
            "X-To-Her-Id": receiver,
            "X-Subject": "SVAR_LAB",
            "Content-Type": "application/pkcs7-mime; smime-type=signed-and-enveloped-data",
        }
        async with self.client.post("/transport/http", data=packet, headers=headers) as response:
            return response.status, await response.read()


@pytest.fixture(name="peers")
async def _peers(tmp_path: Path) -> AsyncIterator[Peers]:
    hub, stolav, _network, _pki = build(tmp_path)
    async with stolav, TestClient(TestServer(create_app(hub))) as client:
        yield Peers(hub, stolav, client)


def _ciphertext_span(packet: bytes) -> tuple[int, int]:
    info = acms.ContentInfo.load(packet)
    ciphertext = info["content"]["encrypted_content_info"]["encrypted_content"].native
    start = packet.find(ciphertext)
    return start, start + len(ciphertext)


def block_pair_variants(packet: bytes) -> list[bytes]:
    """What the probe sent: the captured packet with a pair of its ciphertext blocks moved to the end (the
    last plaintext block becomes a chosen one: its padding is valid or not by what it holds), and with
    single bits flipped through the ciphertext."""
    start, end = _ciphertext_span(packet)
    blocks = [packet[i : i + 16] for i in range(start, end, 16)]
    variants = []
    for i in range(1, len(blocks) - 1, max(1, len(blocks) // 24)):
        moved = b"".join([*blocks[:-2], blocks[i - 1], blocks[i]])
        variants.append(packet[:start] + moved + packet[end:])
    for offset in range(start, end, max(16, (end - start) // 24)):
        for bit in (0x01, 0x10):
            variants.append(packet[:offset] + bytes([packet[offset] ^ bit]) + packet[offset + 1 :])
    return variants


def _msg_id(xml: bytes) -> str:
    return xml.split(b"<MsgId>")[1].split(b"</MsgId>")[0].decode()


class TestNoDecryptionOracle:
    async def test_tampered_ciphertext_gets_one_answer_and_is_never_parsed(
        self, peers: Peers, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Item 1: moved block pairs and flipped bits of a captured Svarrapport packet - whether the padding
        survives or not - are answered with the same status and the same bytes, and none of the decrypted
        plaintext is ever given to the XML parser, logged or stored."""
        judged: list[bytes] = []
        real_judge = peers.hub.core.validator.judge

        def spy(data: bytes, **kwargs: Any) -> Any:
            judged.append(data)
            return real_judge(data, **kwargs)

        monkeypatch.setattr(peers.hub.core.validator, "judge", spy)
        original = fixture_bytes(SVARRAPPORT)
        captured = peers.packet(original)
        variants = block_pair_variants(captured)
        assert len(variants) >= 40
        with capture_logs() as logs:
            answers = [await peers.post(v) for v in variants]
        refused = [a for a in answers if a[0] != 202]
        # a flip that garbles only what the signature does not cover (an embedded certificate) changes nothing
        # that is read: that packet opens, verified, with the lab's own bytes
        assert len(refused) >= len(variants) // 2
        assert len(set(refused)) == 1, set(refused)
        ((status, body),) = set(refused)
        assert status == 422
        assert b"transport:invalid-cms-pkcs" in body and b"line" not in body and b"xmlChar" not in body
        assert all(data == original for data in judged)  # nothing unverified reached the parser
        messages = await peers.hub.store.list_messages(limit=100)
        assert {m.msg_id for m in messages.items if m.direction == "in"} <= {_msg_id(original)}
        assert PATIENT_ID not in repr(logs) and "HbA1c" not in repr(logs)
        refusals = await peers.hub.store.refusals(limit=1000)
        assert len(refusals) == len(refused)
        assert {r.event for r in refusals} == {"security.unverified_packet"}
        assert {r.claimed_sender for r in refusals} == {LAB}
        # the honest packet goes through afterwards (a duplicate if a harmless flip got there first)
        status, _ = await peers.post(captured)
        assert status == 202 and original in judged and all(data == original for data in judged)

    async def test_an_unverified_packet_is_answered_no_sooner_than_the_floor(self, tmp_path: Path) -> None:
        """A bad padding fails at once, a good one after a parse and a signature check: both answers wait
        for ``security.unverified_answer_s``, so their timing does not tell them apart. (A lower bound only:
        a slow machine makes it longer, never shorter.)"""
        hub, stolav, _network, _pki = build(tmp_path, unverified_answer_s=0.3)
        async with stolav, hub:
            captured = stolav.protection.protect(fixture_bytes(SVARRAPPORT), sender_her=LAB, receiver_her=GP)
            start, end = _ciphertext_span(captured)
            bad_padding = captured[: end - 17] + bytes([captured[end - 17] ^ 0x01]) + captured[end - 16 :]
            garbled = captured[: start + 160] + bytes([captured[start + 160] ^ 0x10]) + captured[start + 161 :]
            loop = asyncio.get_running_loop()
            for packet in (bad_padding, garbled, b"not CMS at all"):
                began = loop.time()
                result = await hub.receive(Packet(packet, "t", LAB, GP, "application/pkcs7-mime", ""), via="memory")
                assert result.event == "security.unverified_packet"
                assert loop.time() - began >= 0.3
            honest = await hub.receive(Packet(captured, "t", LAB, GP, "application/pkcs7-mime", ""), via="memory")
            assert honest.accepted

    async def test_decryption_failure_and_bad_signature_answer_alike(self, peers: Peers) -> None:
        """A packet for someone else, garbage, a self-signed forgery and a signature by another party: one answer."""
        body = fixture_bytes(SVARRAPPORT)
        forged = peers.packet(body, sender="7200101")  # the medical department's signature, claimed as the lab's
        for_stolav = peers.packet(body, receiver="7200101")  # encrypted to a certificate we hold no key for
        answers = {
            await peers.post(forged),
            await peers.post(for_stolav),
            await peers.post(os.urandom(2000)),
            await peers.post(b"<Message/>"),
        }
        assert len(answers) == 1, answers


class TestSpoofingCannotBlockTheRealSender:
    async def test_self_made_key_without_certificates_is_refused_and_leaves_no_trace(self, peers: Peers) -> None:
        """Item 2: signed with a self-made key and no certificate embedded (openssl -nocerts), under the
        lab's MsgId: refused like any unverified packet - no record under the lab, no AppRec, no dedupe
        key - so the lab's genuine message with that MsgId is received and reaches the inbox."""
        msg_id = str(uuid.uuid4())
        body = with_msg_id(fixture_bytes(SVARRAPPORT), msg_id)
        cert, key = DevCa.create("Selvlaget CA").issue(
            party_subject(peers.hub.register.get(LAB), "sign"),  # type: ignore[arg-type]
            purpose="sign",
        )
        signed = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(body)
            .add_signer(cert, key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoCerts])
        )
        forged = encrypt(signed, peers.hub.protection.keys.encryption_cert(GP))  # type: ignore[attr-defined]
        status, _ = await peers.post(forged)
        assert status == 422
        assert await peers.hub.store.counts() == {}
        status, answer = await peers.post(peers.packet(body))
        assert status == 202, answer
        inbox = await peers.hub.store.inbox(GP)
        assert [m.msg_id for m in inbox] == [msg_id]
        assert inbox[0].state == MessageState.RECEIVED and inbox[0].sender_her == LAB


class TestBoundedStorage:
    async def test_refused_garbage_costs_metadata_not_its_bytes(self, peers: Peers, tmp_path: Path) -> None:
        """Item 4: 30 refused 1 MB packets grow the store by far less than a megabyte, appear in no party's
        message list, and the refusal log keeps only the newest ``refusals_kept``."""
        db = tmp_path / "hub" / "gateway.sqlite"

        def size() -> int:
            return sum(p.stat().st_size for p in db.parent.glob("gateway.sqlite*"))

        settings = peers.hub.settings
        peers.hub.core = dataclasses.replace(
            peers.hub.core,
            settings=dataclasses.replace(
                settings, housekeeping=dataclasses.replace(settings.housekeeping, refusals_kept=10)
            ),
        )
        peers.hub.inbound.core = peers.hub.core
        before = size()
        bodies = [os.urandom(1024 * 1024) for _ in range(30)]
        for body in bodies:
            assert (await peers.post(body))[0] == 422
        assert size() - before < 1024 * 1024
        refusals = await peers.hub.store.refusals(limit=100)
        assert len(refusals) == 10
        assert refusals[0].sha256 == hashlib.sha256(bodies[-1]).hexdigest() and refusals[0].size == len(bodies[-1])
        page = await peers.hub.store.list_messages(parties=[LAB], limit=100)
        assert page.items == ()
        with sqlite3.connect(db) as conn:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(refusals)")}
        assert not columns & {"payload", "body", "content"}


class TestTransportReceiverMismatch:
    @pytest.mark.parametrize("to_her", ["7200102", "7999999", "../../etc/passwd"])
    async def test_valid_packet_under_a_wrong_transport_receiver_is_e10(self, tmp_path: Path, to_her: str) -> None:
        """Item 9: a valid packet for the GP (7102001) whose transport metadata names another receiver is the
        documented metadata mismatch: answered E10 by the GP - not E21 'not registered'."""
        hub, stolav, _network, _pki = build(tmp_path)
        async with stolav, hub:
            body = fixture_bytes(EPIKRISE)
            packet = Packet(
                stolav.protection.protect(body, sender_her="7200101", receiver_her=GP),
                "t",
                "7200101",
                to_her,
                stolav.protection.content_type,
                "EPIKRISE",
            )
            result = await hub.receive(packet, via="memory")
            assert result.accepted and result.code == "E10", result
            view = await hub.store.get(result.reference or "")
            assert view is not None and view.message.receiver_her == GP
            apprec_id = next(t.detail["apprec_message_id"] for t in view.trace if t.event == "apprec.queued")
            apprec = await hub.store.payload(apprec_id)
            assert apprec is not None and b'V="E10"' in apprec and b'V="E21"' not in apprec

    async def test_a_resend_under_wrong_metadata_cannot_keep_the_real_one_out(self, tmp_path: Path) -> None:
        """Whoever holds the signed message (a copy receiver) re-sends it to the GP under a wrong transport
        receiver before St. Olavs' own packet arrives: that copy is answered E10, and St. Olavs' packet is
        still received and reaches the GP's inbox. The other way round, the late wrong copy is a duplicate:
        no second AppRec tells St. Olavs its message was refused."""
        hub, stolav, _network, _pki = build(tmp_path)
        async with stolav, hub:
            signed_for_gp = stolav.protection.protect(fixture_bytes(EPIKRISE), sender_her="7200101", receiver_her=GP)

            def packet(to_her: str) -> Packet:
                return Packet(signed_for_gp, str(uuid.uuid4()), "7200101", to_her, "application/pkcs7-mime", "")

            wrong = await hub.receive(packet("7999999"), via="memory")
            assert wrong.accepted and wrong.code == "E10"
            real = await hub.receive(packet(GP), via="memory")
            assert real.accepted and real.code is None and real.reference != wrong.reference
            assert [m.id for m in await hub.store.inbox(GP)] == [real.reference]
            late = await hub.receive(packet("7200102"), via="memory")
            assert late.reference == real.reference  # the duplicate of the good one
            apprecs = await hub.store.list_messages(direction="out", kind="apprec-1.1", limit=10)
            assert len(apprecs.items) == 2  # E10 for the wrong copy, OK for the real one - none for the late copy

    async def test_copy_receiver_named_by_the_transport_is_plainly_ours(self, tmp_path: Path) -> None:
        """The copy to Frøya's home care (7100101), addressed to it by the transport: received, answered OK as COP."""
        hub, stolav, _network, _pki = build(tmp_path)
        async with stolav, hub:
            packet = Packet(
                stolav.protection.protect(fixture_bytes(EPIKRISE), sender_her="7200101", receiver_her="7100101"),
                "t",
                "7200101",
                "7100101",
                stolav.protection.content_type,
                "EPIKRISE",
            )
            result = await hub.receive(packet, via="memory")
            assert result.accepted and result.code is None
            view = await hub.store.get(result.reference or "")
            assert view is not None and view.message.state == MessageState.RECEIVED


def test_fixture_patient_is_synthetic() -> None:
    """The id this module looks for in logs is the fixture's synthetic one (month + 80)."""
    assert 81 <= int(PATIENT_ID[2:4]) <= 92 and PATIENT_ID.encode() in fixture_bytes(SVARRAPPORT)


async def test_operators_see_refusals_with_their_cause(peers: Peers) -> None:
    """GET /v1/admin/refusals: the cause the peer was not told, the claimed sender, the digest - no bytes."""
    forged = peers.packet(fixture_bytes(SVARRAPPORT), sender="7200101")
    await peers.post(forged)
    token = (peers.hub.settings.data_dir / "dev-token").read_text().strip()
    async with peers.client.get("/v1/admin/refusals", headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200
        (item,) = (await response.json())["items"]
    assert item["cause"] == "security.spoofing_attack" and item["claimed_sender"] == LAB
    assert item["sha256"] == hashlib.sha256(forged).hexdigest() and item["size"] == len(forged)
    assert not {"payload", "body", "content"} & set(item)
    for before in ("²", "9" * 40, "-1"):  # a digit to Python, past SQLite's integers, a sign: 400, never a 500
        async with peers.client.get(
            "/v1/admin/refusals", params={"before": before}, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 400, before

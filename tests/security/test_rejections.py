"""Every way an inbound packet or an outbound certificate is refused: each with its own error and code for
an operator's tool (``open``), and one answer for a peer (``unprotect``) for everything before a verified
signature."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import x509 as ax509
from structlog.testing import capture_logs

from gateway.errors import (
    CertificateExpired,
    CertificateKeyUsage,
    CertificateRevoked,
    CertificateUntrusted,
    DecryptionFailed,
    InvalidCms,
    SecurityError,
    SignatureInvalid,
    SpoofingDetected,
    UnverifiedPacket,
)
from gateway.security import SignThenEncrypt, cms_decrypt
from gateway.security.certs import CertRef
from gateway.security.cms import encrypt, sign
from gateway.security.devpki import ENCRYPTION_USAGE, DevCa, party_subject, revoke, write_certificate
from gateway.security.keys import KeyPair
from tests.security.conftest import FROYA, HITRA, STOLAV, XML, World, openssl, seal


def _minted(world: World, her_id: str, ca: DevCa | None = None, **overrides: object) -> KeyPair:
    """A signing certificate for ``her_id``'s subject with the given oddity, issued by the dev CA (or ``ca``),
    installed as the party's registered signing certificate: the sender's own certificate is what is wrong."""
    issuer = ca or DevCa.load(world.pki)
    cert, key = issuer.issue(party_subject(world.party(her_id), "sign"), purpose="sign", **overrides)  # type: ignore[arg-type]
    write_certificate(world.pki / her_id / "sign.crt", cert)
    return KeyPair(CertRef(cert, "minted by the test"), key)


def _receiver_cert(protection: SignThenEncrypt, her_id: str) -> CertRef:
    return protection.keys.encryption_cert(her_id)


class TestSignature:
    def test_tampered_content_fails_the_digest(self, protection: SignThenEncrypt, template: World) -> None:
        """Content changed after signing (same length): SignatureInvalid, AppRec S01."""
        signed = sign(XML, template.pair(STOLAV, "sign"))
        tampered = signed.replace(b"\xe6rlig", b"urlig")
        assert tampered != signed
        packet = encrypt(tampered, _receiver_cert(protection, FROYA))
        with pytest.raises(SignatureInvalid, match="digest") as caught:
            protection.open(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert caught.value.apprec_code == "S01"
        # nothing unverified rides on the error: the tampered content is not for anyone to read
        assert not hasattr(caught.value, "content")
        assert b"urlig".decode() not in caught.value.message

    def test_flipped_signature_byte_fails(self, protection: SignThenEncrypt, template: World) -> None:
        """One bit of the signature value changed: SignatureInvalid naming the signer certificate."""
        signed = bytearray(sign(XML, template.pair(STOLAV, "sign")))
        signed[-1] ^= 0x80
        packet = encrypt(bytes(signed), _receiver_cert(protection, FROYA))
        with pytest.raises(SignatureInvalid, match="serialNumber=7200101") as caught:
            protection.open(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        # verified with the sender's registered certificate, never with one the packet brought along
        assert "sign.crt" in caught.value.message and "embedded" not in caught.value.message

    def test_flipped_signature_without_signed_attributes_fails(
        self, template: World, protection: SignThenEncrypt
    ) -> None:
        """Signatures straight over the content (no signed attributes) are checked too."""
        signer = template.pki / STOLAV
        signed = bytearray(
            openssl("cms", "-sign", "-binary", "-nodetach", "-noattr", "-outform", "DER",
                    "-signer", signer / "sign.crt", "-inkey", signer / "sign.key", stdin=XML)
        )  # fmt: skip
        signed[-3] ^= 0x01
        packet = encrypt(bytes(signed), _receiver_cert(protection, FROYA))
        with pytest.raises(SignatureInvalid):
            protection.open(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)


def _hostile_packets(protection: SignThenEncrypt, template: World) -> dict[str, bytes]:
    """Every way a packet for FROYA claimed to be from HITRA can fail before its signature verifies."""
    good = bytearray(protection.protect(XML, sender_her=HITRA, receiver_her=FROYA))
    info = acms.ContentInfo.load(bytes(good))
    encrypted_key = info["content"]["recipient_infos"][0].chosen["encrypted_key"].native
    ciphertext = info["content"]["encrypted_content_info"]["encrypted_content"].native
    start = bytes(good).find(ciphertext)
    bad_key = bytes(good).replace(encrypted_key, bytes(b ^ 0x5A for b in encrypted_key))
    # a block inside the signed XML: CBC garbles it and flips one byte of the next, the padding stays valid
    inside = start + (sign(XML, template.pair(HITRA, "sign")).find(XML) // 16 + 2) * 16
    garbled = bytes(good[:inside]) + bytes([good[inside] ^ 0x10]) + bytes(good[inside + 1 :])
    last_block = start + len(ciphertext) - 17  # breaks the CBC padding
    bad_padding = bytes(good[:last_block]) + bytes([good[last_block] ^ 0x01]) + bytes(good[last_block + 1 :])
    receiver = _receiver_cert(protection, FROYA)
    stranger = DevCa.create("Rogue CA").issue(party_subject(template.party(HITRA), "sign"), purpose="sign")
    return {
        "wrong recipient": protection.protect(XML, sender_her=HITRA, receiver_her=STOLAV),
        "bad key transport": bad_key,
        "garbled content block": garbled,
        "bad padding": bad_padding,
        "garbage after decryption": encrypt(b"not a SignedData at all", receiver),
        "not CMS at all": XML,
        "truncated": bytes(good[: len(good) // 2]),
        "signed by another party": protection.protect(XML, sender_her=FROYA, receiver_her=FROYA),
        "signed by a stranger": seal(XML, KeyPair(CertRef(stranger[0], "a stranger"), stranger[1]), receiver),
        "signature over other content": encrypt(
            sign(XML, template.pair(HITRA, "sign")).replace(b"\xe6rlig", b"urlig"), receiver
        ),
    }


class TestDecryption:
    def test_every_decryption_failure_reads_the_same(self, protection: SignThenEncrypt, template: World) -> None:
        """Wrong recipient, bad key transport, bad padding, garbage inside: one error, one text (tools)."""
        packets = _hostile_packets(protection, template)
        messages = {}
        for name in ("wrong recipient", "bad key transport", "bad padding", "garbage after decryption"):
            with pytest.raises(DecryptionFailed) as caught:
                protection.open(packets[name], receiver_her=FROYA, claimed_sender_her=HITRA)
            messages[name] = caught.value.message
        assert len(set(messages.values())) == 1, messages

    def test_a_peer_hears_one_answer_for_every_failure_before_verification(
        self, protection: SignThenEncrypt, template: World
    ) -> None:
        """Decryption failures, a garbled block whose padding survived, a signature that does not verify,
        a signer that is not the claimed sender, not CMS at all: the peer cannot tell them apart (telling
        decryption from signature failures apart is itself a padding oracle). The cause is kept apart."""
        answers, causes = set(), {}
        for name, packet in _hostile_packets(protection, template).items():
            with pytest.raises(UnverifiedPacket) as caught:
                protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
            error = caught.value
            answers.add((error.message, error.event, error.transport_condition, error.apprec_code, error.http_status))
            causes[name] = (error.cause, error.reason)
            assert not hasattr(error, "content"), name
        assert len(answers) == 1, answers
        # what an operator reads: before any key is used, what was wrong with the packet as sent ...
        assert causes["not CMS at all"][0] == causes["truncated"][0] == "security.invalid_cms"
        assert causes["wrong recipient"] == ("security.decryption_failed", "no recipient for our keys")
        # ... a signature another party's registered certificate verifiably made ...
        assert causes["signed by another party"] == ("security.spoofing_attack", f"signed by party {FROYA}")
        # ... and once a key was used, one cause whatever failed: a log reader learns no padding bit either
        after_key = {causes[name] for name in (
            "bad key transport", "garbled content block", "bad padding", "garbage after decryption",
            "signed by a stranger", "signature over other content",
        )}  # fmt: skip
        assert after_key == {("security.unverified_packet", "it did not decrypt and verify")}

    def test_a_claimed_sender_without_certificate_costs_no_private_key_operation(
        self, protection: SignThenEncrypt, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A packet claiming a sender with no registered signing certificate is refused before decryption."""
        packet = protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)
        monkeypatch.setattr(protection.keys, "decryptors", lambda her: pytest.fail("a private key was used"))
        with pytest.raises(UnverifiedPacket):
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her="7999999")

    def test_decryption_failure_has_the_transport_condition(self, protection: SignThenEncrypt) -> None:
        """A packet for another receiver is DecryptionFailed with transport:decryption-failed."""
        packet = protection.protect(XML, sender_her=HITRA, receiver_her=STOLAV)
        with pytest.raises(DecryptionFailed) as caught:
            protection.open(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
        assert caught.value.transport_condition == "transport:decryption-failed"
        assert caught.value.retryable is False

    def test_not_cms_is_invalid_cms(self, protection: SignThenEncrypt) -> None:
        """Bytes that are no CMS at all (here: plain XML) are InvalidCms, before any key is used."""
        with pytest.raises(InvalidCms):
            protection.open(XML, receiver_her=FROYA, claimed_sender_her=HITRA)

    def test_3des_is_refused_unless_allowed(self, template: World) -> None:
        """A 3DES packet is refused by default (InvalidCms naming 3DES) and opens with allow_3des."""
        signer, recipient = template.pki / STOLAV, template.pki / FROYA
        signed = openssl("cms", "-sign", "-binary", "-nodetach", "-outform", "DER",
                         "-signer", signer / "sign.crt", "-inkey", signer / "sign.key", stdin=XML)  # fmt: skip
        packet = openssl("cms", "-encrypt", "-binary", "-outform", "DER", "-des3",
                         "-recip", recipient / "enc.crt", stdin=signed)  # fmt: skip
        with pytest.raises(InvalidCms, match="3DES"):
            template.protection().open(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        allowed = template.protection(allow_3des=True)
        assert allowed.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV).content == XML


class TestSpoofing:
    def test_signer_not_the_claimed_sender(self, protection: SignThenEncrypt) -> None:
        """Signed by HITRA, claimed to be from STOLAV: SpoofingDetected, logged loudly naming who signed."""
        packet = protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)
        with capture_logs() as logs, pytest.raises(SpoofingDetected) as caught:
            protection.open(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert "registered signing certificate" in caught.value.message
        (entry,) = [e for e in logs if e["event"] == "security.spoofing_attack"]
        assert entry["log_level"] == "error"
        assert entry["code"] == "security.spoofing_attack"
        assert (entry["claimed_sender"], entry["signed_by_party"]) == (STOLAV, HITRA)
        assert not any(isinstance(v, bytes) or "MsgHead" in str(v) for v in entry.values())

    def test_valid_certificate_of_no_party(self, world: World) -> None:
        """A trusted certificate registered for nobody speaks for no sender, claimed or looked up."""
        protection = world.protection()
        stranger = _minted(world, STOLAV)  # same subject, same CA, but not the registered certificate
        packet = seal(XML, stranger, _receiver_cert(protection, FROYA))
        with pytest.raises(SpoofingDetected, match="registered signing certificate"):
            protection.open(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        with pytest.raises(SpoofingDetected, match="registered signing certificate"):
            protection.identify(packet, receiver_her=FROYA)


def _untrusted(protection: SignThenEncrypt, packet: bytes) -> SecurityError:
    """The trust verdict on a packet from STOLAV whose signature verified: content readable, not accepted."""
    verified = protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
    assert verified.content == XML
    assert verified.untrusted is not None
    return verified.untrusted


class TestSignerCertificate:
    def test_expired(self, world: World) -> None:
        """A signer certificate past its not-after: CertificateExpired (S02, transport:expired-certificate)."""
        long_ago = datetime.now(UTC) - timedelta(days=800)
        expired = _minted(world, STOLAV, not_before=long_ago, not_after=long_ago + timedelta(days=365))
        protection = world.protection()
        packet = seal(XML, expired, _receiver_cert(protection, FROYA))
        untrusted = _untrusted(protection, packet)
        assert isinstance(untrusted, CertificateExpired) and "expired at" in untrusted.message
        assert (untrusted.apprec_code, untrusted.transport_condition) == ("S02", "transport:expired-certificate")

    def test_not_yet_valid(self, world: World) -> None:
        """A signer certificate whose not-before lies ahead: CertificateExpired saying "not valid yet"."""
        soon = datetime.now(UTC) + timedelta(days=2)
        early = _minted(world, STOLAV, not_before=soon, not_after=soon + timedelta(days=365))
        protection = world.protection()
        packet = seal(XML, early, _receiver_cert(protection, FROYA))
        untrusted = _untrusted(protection, packet)
        assert isinstance(untrusted, CertificateExpired) and "not valid yet" in untrusted.message

    def test_wrong_key_usage(self, world: World) -> None:
        """Signed with an encryption-only certificate: CertificateKeyUsage naming the usage it has."""
        wrong = _minted(world, STOLAV, key_usage=ENCRYPTION_USAGE)
        protection = world.protection()
        packet = seal(XML, wrong, _receiver_cert(protection, FROYA))
        untrusted = _untrusted(protection, packet)
        assert isinstance(untrusted, CertificateKeyUsage) and "keyEncipherment, dataEncipherment" in untrusted.message

    def test_unknown_ca(self, world: World) -> None:
        """A certificate from a CA that is no trust anchor: CertificateUntrusted naming the anchors."""
        rogue = _minted(world, STOLAV, ca=DevCa.create("Rogue CA"))
        protection = world.protection()
        packet = seal(XML, rogue, _receiver_cert(protection, FROYA))
        untrusted = _untrusted(protection, packet)
        assert isinstance(untrusted, CertificateUntrusted) and "Trust anchors" in untrusted.message
        assert "Rogue CA" in untrusted.message

    def test_revoked(self, world: World) -> None:
        """A signer certificate on the CRL: CertificateRevoked, AppRec S03, naming the CRL and the reason."""
        packet = world.protection().protect(XML, sender_her=HITRA, receiver_her=FROYA)
        revoke(world.pki, world.pair(HITRA, "sign").ref.cert)
        verified = world.protection().unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
        untrusted = verified.untrusted
        assert isinstance(untrusted, CertificateRevoked) and "key_compromise" in untrusted.message
        assert (untrusted.apprec_code, untrusted.transport_condition) == ("S03", "transport:revoked-certificate")
        assert "ca.crl" in untrusted.message
        assert verified.content == XML  # signed by the registered (if revoked) certificate: read and answered S03


class TestReceiverCertificate:
    def test_expired_encryption_certificate_fails_protect_for_good(self, world: World) -> None:
        """Protecting to a receiver whose encryption certificate expired: CertificateExpired, not retryable."""
        ca = DevCa.load(world.pki)
        long_ago = datetime.now(UTC) - timedelta(days=800)
        cert, _key = ca.issue(
            party_subject(world.party(STOLAV), "encrypt"),
            purpose="encrypt",
            not_before=long_ago,
            not_after=long_ago + timedelta(days=365),
        )
        write_certificate(world.pki / STOLAV / "enc.crt", cert)
        with pytest.raises(CertificateExpired, match=r"enc\.crt") as caught:
            world.protection().protect(XML, sender_her=FROYA, receiver_her=STOLAV)
        assert caught.value.retryable is False

    def test_signing_certificate_cannot_be_encrypted_to(self, world: World) -> None:
        """A receiver "encryption" certificate without keyEncipherment: CertificateKeyUsage on protect."""
        (world.pki / STOLAV / "enc.crt").write_bytes((world.pki / STOLAV / "sign.crt").read_bytes())
        with pytest.raises(CertificateKeyUsage, match="keyEncipherment"):
            world.protection().protect(XML, sender_her=FROYA, receiver_her=STOLAV)


class TestHostileInput:
    def test_mangled_packets_only_raise_security_errors(self, protection: SignThenEncrypt) -> None:
        """Truncated or bit-flipped packets never escape as unknown exceptions (which would be retried)."""
        good = protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)
        rng = random.Random(1216)
        mangled = [good[:n] for n in (0, 1, 2, 10, 100, len(good) // 2, len(good) - 1)]
        for _ in range(150):
            packet = bytearray(good)
            packet[rng.randrange(len(packet))] ^= 1 << rng.randrange(8)
            mangled.append(bytes(packet))
        outcomes, answers = set(), set()
        for packet in mangled:
            try:
                protection.open(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
                outcomes.add("opened")  # a flip in an unused field (e.g. an IV bit of the last block) may pass
            except SecurityError as exc:
                outcomes.add(type(exc).__name__)
            try:
                protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
            except SecurityError as exc:
                answers.add((type(exc).__name__, exc.message, exc.transport_condition))
        assert {"InvalidCms", "DecryptionFailed"} <= outcomes
        assert answers == {("UnverifiedPacket", UnverifiedPacket().message, "transport:invalid-cms-pkcs")}


class _Counting:
    """A private key that counts its decryptions."""

    def __init__(self, real: object, calls: list[int]) -> None:
        self.real, self.calls = real, calls

    def decrypt(self, *args: object) -> bytes:
        self.calls.append(1)
        return self.real.decrypt(*args)  # type: ignore[attr-defined, no-any-return]


class TestBoundedWork:
    @pytest.fixture(name="rsa_calls")
    def _rsa_calls(self, protection: SignThenEncrypt, monkeypatch: pytest.MonkeyPatch) -> list[int]:
        """Every private-key decryption our keys make from now on (FROYA's for FROYA, every local party's
        for a receiver that is none of ours)."""
        calls: list[int] = []
        real = protection.keys.decryptors

        def counted(her: str) -> tuple[KeyPair, ...]:
            return tuple(
                dataclasses.replace(pair, key=_Counting(pair.key, calls))  # type: ignore[arg-type]
                for pair in real(her)
            )

        monkeypatch.setattr(protection.keys, "decryptors", counted)
        return calls

    def _with_recipients(self, packet: bytes, count: int, *, spoil_key: bool = False) -> bytes:
        """The packet with its one RecipientInfo repeated ``count`` times (its key block spoiled if asked)."""
        info = acms.ContentInfo.load(packet)
        enveloped = info["content"]
        (recipient,) = list(enveloped["recipient_infos"])
        if spoil_key:
            key = recipient.chosen["encrypted_key"].native
            recipient.chosen["encrypted_key"] = bytes(b ^ 0x5A for b in key)
        enveloped["recipient_infos"] = acms.RecipientInfos([recipient.copy() for _ in range(count)])
        return bytes(info.dump(force=True))

    def test_too_many_recipients_are_refused_before_any_key_is_used(
        self, protection: SignThenEncrypt, rsa_calls: list[int]
    ) -> None:
        """Item 7: a packet listing thousands of RecipientInfos costs no private-key operation."""
        packet = self._with_recipients(protection.protect(XML, sender_her=HITRA, receiver_her=FROYA), 2000)
        with pytest.raises(InvalidCms, match="recipients"):
            protection.open(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
        assert rsa_calls == []

    def test_a_packet_naming_our_keys_more_than_once_costs_no_key_operation(
        self, protection: SignThenEncrypt, rsa_calls: list[int]
    ) -> None:
        """Sixteen RecipientInfos all naming our certificate: which key to use is not one question with one
        answer, so the packet is refused before any RSA operation (trying one after another would let the
        padding decide how much work is done)."""
        good = protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)
        packet = self._with_recipients(good, 16, spoil_key=True)
        with pytest.raises(DecryptionFailed) as caught:
            protection.open(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
        assert caught.value.reason == "more than one recipient names our keys"
        assert rsa_calls == []

    def test_good_and_bad_padding_cost_the_same_operations(
        self, protection: SignThenEncrypt, rsa_calls: list[int], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A captured packet whose last block is replaced so that the padding is good, and one where it is
        bad: one key transport and one content decryption each - the padding never steers the work."""
        aes_calls: list[int] = []
        real = cms_decrypt._decrypt_content

        def counted(*args: object) -> bytes:
            aes_calls.append(1)
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(cms_decrypt, "_decrypt_content", counted)
        good = protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)
        info = acms.ContentInfo.load(good)
        ciphertext = info["content"]["encrypted_content_info"]["encrypted_content"].native
        last = good.find(ciphertext) + len(ciphertext) - 17
        bad_padding = good[:last] + bytes([good[last] ^ 0x01]) + good[last + 1 :]
        # and the probe's amplifier: a second RecipientInfo naming another local party's certificate, sent
        # to a receiver that is none of ours so that every local key is a candidate
        other = acms.ContentInfo.load(protection.protect(XML, sender_her=HITRA, receiver_her=HITRA))
        extra = other["content"]["recipient_infos"][0]
        work = {}
        for name, packet, receiver in (
            ("good", good, FROYA),
            ("bad padding", bad_padding, FROYA),
            ("good, two of our keys named", self._add_recipient(good, extra), "7999999"),
            ("bad padding, two of our keys named", self._add_recipient(bad_padding, extra), "7999999"),
        ):
            rsa_calls.clear()
            aes_calls.clear()
            with contextlib.suppress(DecryptionFailed):
                protection.open(packet, receiver_her=receiver, claimed_sender_her=HITRA)
            work[name] = (len(rsa_calls), len(aes_calls))
        assert work["good"] == work["bad padding"] == (1, 1)
        assert work["good, two of our keys named"] == work["bad padding, two of our keys named"] == (0, 0)

    def test_odd_key_transport_parameters_are_not_cms_not_a_crash(self, protection: SignThenEncrypt) -> None:
        """OAEP whose mask generation names an unknown function with an INTEGER parameter: InvalidCms for the
        tools, the one answer for a peer - never an unknown exception (which a transport answers 500)."""
        info = acms.ContentInfo.load(protection.protect(XML, sender_her=HITRA, receiver_her=FROYA))
        recipient = info["content"]["recipient_infos"][0].chosen
        recipient["key_encryption_algorithm"] = acms.KeyEncryptionAlgorithm(
            {
                "algorithm": "rsaes_oaep",
                "parameters": {"mask_gen_algorithm": {"algorithm": "1.2.3.4", "parameters": core.Integer(5)}},
            }
        )
        packet = bytes(info.dump(force=True))
        with pytest.raises(InvalidCms):
            protection.open(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
        with pytest.raises(UnverifiedPacket):
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA)

    def test_a_huge_issuer_name_is_refused_before_it_is_compared(
        self, protection: SignThenEncrypt, rsa_calls: list[int]
    ) -> None:
        """A RecipientInfo naming our certificate's serial under a 3 KB issuer: refused unread (the RFC 5280
        name comparison prepares strings in pure Python - seconds of CPU for nothing)."""
        info = acms.ContentInfo.load(protection.protect(XML, sender_her=HITRA, receiver_her=FROYA))
        rid = info["content"]["recipient_infos"][0].chosen["rid"].chosen
        rid["issuer"] = ax509.Name.build({"organization_name": "Ø" * 1500})  # 3 KB: within the list budget
        with pytest.raises(InvalidCms, match="issuer"):
            protection.open(bytes(info.dump(force=True)), receiver_her=FROYA, claimed_sender_her=HITRA)
        assert rsa_calls == []

    @staticmethod
    def _add_recipient(packet: bytes, extra: acms.RecipientInfo) -> bytes:
        info = acms.ContentInfo.load(packet)
        enveloped = info["content"]
        recipients = [r.copy() for r in enveloped["recipient_infos"]]
        enveloped["recipient_infos"] = acms.RecipientInfos([*recipients, extra.copy()])
        return bytes(info.dump(force=True))


class TestStrangerCertificate:
    def test_unregistered_certificate_is_spoofing_not_s02(self, world: World) -> None:
        """A certificate that is not the claimed sender's registered one - even with the sender's name on it and
        from an unknown CA - is spoofing, refused without content: nobody can make the gateway answer S02."""
        protection = world.protection()
        issuer = DevCa.create("Rogue CA")
        cert, key = issuer.issue(party_subject(world.party(STOLAV), "sign"), purpose="sign")
        packet = seal(XML, KeyPair(CertRef(cert, "a stranger"), key), _receiver_cert(protection, FROYA))
        with pytest.raises(SpoofingDetected) as caught:
            protection.open(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert not hasattr(caught.value, "content")

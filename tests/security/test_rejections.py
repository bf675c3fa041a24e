"""Every way an inbound packet or an outbound certificate is refused, each with its own error and code."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import cms as acms
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
)
from gateway.security import SignThenEncrypt
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
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert caught.value.apprec_code == "S01"
        # the pipeline answers S01 from the MsgHead, so the (unverified) content rides on the error
        assert getattr(caught.value, "content", None) == XML.replace(b"\xe6rlig", b"urlig")

    def test_flipped_signature_byte_fails(self, protection: SignThenEncrypt, template: World) -> None:
        """One bit of the signature value changed: SignatureInvalid naming the signer certificate."""
        signed = bytearray(sign(XML, template.pair(STOLAV, "sign")))
        signed[-1] ^= 0x80
        packet = encrypt(bytes(signed), _receiver_cert(protection, FROYA))
        with pytest.raises(SignatureInvalid, match="serialNumber=7200101") as caught:
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert "embedded in the CMS signature" in caught.value.message

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
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)


class TestDecryption:
    def _messages(self, protection: SignThenEncrypt, template: World) -> dict[str, str]:
        """The error text for each way decryption can fail, all for receiver FROYA."""
        good = bytearray(protection.protect(XML, sender_her=HITRA, receiver_her=FROYA))
        info = acms.ContentInfo.load(bytes(good))
        encrypted_key = info["content"]["recipient_infos"][0].chosen["encrypted_key"].native
        ciphertext = info["content"]["encrypted_content_info"]["encrypted_content"].native
        bad_key = bytes(good).replace(encrypted_key, bytes(b ^ 0x5A for b in encrypted_key))
        mid = bytes(good).find(ciphertext) + len(ciphertext) // 2
        corrupt = bytes(good[:mid]) + bytes([good[mid] ^ 0xFF]) + bytes(good[mid + 1 :])
        last_block = bytes(good).find(ciphertext) + len(ciphertext) - 17  # breaks the CBC padding
        bad_padding = bytes(good[:last_block]) + bytes([good[last_block] ^ 0x01]) + bytes(good[last_block + 1 :])
        garbage_inside = encrypt(b"not a SignedData at all", _receiver_cert(protection, FROYA))
        other_receiver = protection.protect(XML, sender_her=HITRA, receiver_her=STOLAV)
        out = {}
        for name, packet in {
            "wrong recipient": other_receiver,
            "bad key transport": bad_key,
            "corrupt ciphertext": corrupt,
            "bad padding": bad_padding,
            "garbage after decryption": garbage_inside,
        }.items():
            with pytest.raises(DecryptionFailed) as caught:
                protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
            out[name] = caught.value.message
        return out

    def test_every_decryption_failure_reads_the_same(self, protection: SignThenEncrypt, template: World) -> None:
        """Wrong recipient, bad key transport, corrupt ciphertext, bad padding, garbage: one error, one text."""
        messages = self._messages(protection, template)
        assert len(messages) == 5
        assert len(set(messages.values())) == 1, messages

    def test_decryption_failure_has_the_transport_condition(self, protection: SignThenEncrypt) -> None:
        """A packet for another receiver is DecryptionFailed with transport:decryption-failed."""
        packet = protection.protect(XML, sender_her=HITRA, receiver_her=STOLAV)
        with pytest.raises(DecryptionFailed) as caught:
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
        assert caught.value.transport_condition == "transport:decryption-failed"
        assert caught.value.retryable is False
        assert caught.value.content is None

    def test_not_cms_is_invalid_cms(self, protection: SignThenEncrypt) -> None:
        """Bytes that are no CMS at all (here: plain XML) are InvalidCms, before any key is used."""
        with pytest.raises(InvalidCms):
            protection.unprotect(XML, receiver_her=FROYA, claimed_sender_her=HITRA)

    def test_3des_is_refused_unless_allowed(self, template: World) -> None:
        """A 3DES packet is refused by default (InvalidCms naming 3DES) and opens with allow_3des."""
        signer, recipient = template.pki / STOLAV, template.pki / FROYA
        signed = openssl("cms", "-sign", "-binary", "-nodetach", "-outform", "DER",
                         "-signer", signer / "sign.crt", "-inkey", signer / "sign.key", stdin=XML)  # fmt: skip
        packet = openssl("cms", "-encrypt", "-binary", "-outform", "DER", "-des3",
                         "-recip", recipient / "enc.crt", stdin=signed)  # fmt: skip
        with pytest.raises(InvalidCms, match="3DES"):
            template.protection().unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        allowed = template.protection(allow_3des=True)
        assert allowed.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV).content == XML


class TestSpoofing:
    def test_signer_not_the_claimed_sender(self, protection: SignThenEncrypt) -> None:
        """Signed by HITRA, claimed to be from STOLAV: SpoofingDetected, abuse:spoofing-attack, logged loudly."""
        packet = protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)
        with capture_logs() as logs, pytest.raises(SpoofingDetected) as caught:
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert caught.value.transport_condition == "abuse:spoofing-attack"
        assert f"belongs to party {HITRA}" in caught.value.message
        (entry,) = [e for e in logs if e["event"] == "security.spoofing_attack"]
        assert entry["log_level"] == "error"
        assert entry["code"] == "security.spoofing_attack"
        assert (entry["claimed_sender"], entry["signer_party"]) == (STOLAV, HITRA)
        assert not any(isinstance(v, bytes) or "MsgHead" in str(v) for v in entry.values())

    def test_valid_certificate_of_no_party(self, world: World) -> None:
        """A trusted certificate registered for nobody speaks for no sender, claimed or looked up."""
        protection = world.protection()
        stranger = _minted(world, STOLAV)  # same subject, same CA, but not the registered certificate
        packet = seal(XML, stranger, _receiver_cert(protection, FROYA))
        with pytest.raises(SpoofingDetected, match="registered for no party"):
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        with pytest.raises(SpoofingDetected, match="registered for no party"):
            protection.identify(packet, receiver_her=FROYA)


class TestSignerCertificate:
    def test_expired(self, world: World) -> None:
        """A signer certificate past its not-after: CertificateExpired (S02, transport:expired-certificate)."""
        long_ago = datetime.now(UTC) - timedelta(days=800)
        expired = _minted(world, STOLAV, not_before=long_ago, not_after=long_ago + timedelta(days=365))
        protection = world.protection()
        packet = seal(XML, expired, _receiver_cert(protection, FROYA))
        with pytest.raises(CertificateExpired, match="expired at") as caught:
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert (caught.value.apprec_code, caught.value.transport_condition) == ("S02", "transport:expired-certificate")

    def test_not_yet_valid(self, world: World) -> None:
        """A signer certificate whose not-before lies ahead: CertificateExpired saying "not valid yet"."""
        soon = datetime.now(UTC) + timedelta(days=2)
        early = _minted(world, STOLAV, not_before=soon, not_after=soon + timedelta(days=365))
        protection = world.protection()
        packet = seal(XML, early, _receiver_cert(protection, FROYA))
        with pytest.raises(CertificateExpired, match="not valid yet"):
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)

    def test_wrong_key_usage(self, world: World) -> None:
        """Signed with an encryption-only certificate: CertificateKeyUsage naming the usage it has."""
        wrong = _minted(world, STOLAV, key_usage=ENCRYPTION_USAGE)
        protection = world.protection()
        packet = seal(XML, wrong, _receiver_cert(protection, FROYA))
        with pytest.raises(CertificateKeyUsage, match="keyEncipherment, dataEncipherment"):
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)

    def test_unknown_ca(self, world: World) -> None:
        """A certificate from a CA that is no trust anchor: CertificateUntrusted naming the anchors."""
        rogue = _minted(world, STOLAV, ca=DevCa.create("Rogue CA"))
        protection = world.protection()
        packet = seal(XML, rogue, _receiver_cert(protection, FROYA))
        with pytest.raises(CertificateUntrusted, match="Trust anchors") as caught:
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert "Rogue CA" in caught.value.message

    def test_revoked(self, world: World) -> None:
        """A signer certificate on the CRL: CertificateRevoked, AppRec S03, naming the CRL and the reason."""
        packet = world.protection().protect(XML, sender_her=HITRA, receiver_her=FROYA)
        revoke(world.pki, world.pair(HITRA, "sign").ref.cert)
        with pytest.raises(CertificateRevoked, match="key_compromise") as caught:
            world.protection().unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
        assert (caught.value.apprec_code, caught.value.transport_condition) == ("S03", "transport:revoked-certificate")
        assert "ca.crl" in caught.value.message
        assert getattr(caught.value, "content", None) == XML


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
        outcomes = set()
        for packet in mangled:
            try:
                protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=HITRA)
                outcomes.add("opened")  # a flip in an unused field (e.g. an IV bit of the last block) may pass
            except SecurityError as exc:
                outcomes.add(type(exc).__name__)
        assert {"InvalidCms", "DecryptionFailed"} <= outcomes


class TestStrangerCertificate:
    def test_unregistered_certificate_is_spoofing_not_s02(self, world: World) -> None:
        """A certificate that is not the claimed sender's registered one - even with the sender's name on it and
        from an unknown CA - is spoofing, refused without content: nobody can make the gateway answer S02."""
        protection = world.protection()
        issuer = DevCa.create("Rogue CA")
        cert, key = issuer.issue(party_subject(world.party(STOLAV), "sign"), purpose="sign")
        packet = seal(XML, KeyPair(CertRef(cert, "a stranger"), key), _receiver_cert(protection, FROYA))
        with pytest.raises(SpoofingDetected) as caught:
            protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert caught.value.content is None

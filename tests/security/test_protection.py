"""SignThenEncrypt end to end in-process: the profile's shape, the round trip, rollover, the null object."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import cms as acms

from gateway.errors import DecryptionFailed, KeyUnavailable
from gateway.security import CONTENT_TYPE, MessageProtection, NoProtection, SignThenEncrypt, build_protection
from gateway.security.devpki import rollover_encryption
from tests.security.conftest import FROYA, HITRA, STOLAV, XML, World, make_register, openssl


class TestRoundTrip:
    def test_content_comes_back_byte_for_byte(self, protection: SignThenEncrypt) -> None:
        """CRLF line ends and ISO-8859-1 bytes survive protect + unprotect unchanged."""
        packet = protection.protect(XML, sender_her=FROYA, receiver_her=HITRA)
        verified = protection.unprotect(packet, receiver_her=HITRA, claimed_sender_her=FROYA)
        assert verified.content == XML

    def test_verified_names_the_signer(self, protection: SignThenEncrypt) -> None:
        """The result names the signer's party, and the certificate's subject, serial and issuer."""
        packet = protection.protect(XML, sender_her=FROYA, receiver_her=HITRA)
        verified = protection.unprotect(packet, receiver_her=HITRA, claimed_sender_her=FROYA)
        signing = protection.keys.signing_cert(FROYA)
        assert signing is not None
        assert verified.signer_her == FROYA
        assert (verified.subject, verified.serial, verified.issuer) == (
            signing.subject,
            signing.serial,
            signing.issuer,
        )
        assert "serialNumber=7100101" in verified.subject
        assert verified.previous_key is False

    def test_packets_differ_each_time(self, protection: SignThenEncrypt) -> None:
        """A fresh content key per packet: the same message never encrypts to the same bytes."""
        first = protection.protect(XML, sender_her=FROYA, receiver_her=HITRA)
        second = protection.protect(XML, sender_her=FROYA, receiver_her=HITRA)
        assert first != second

    def test_identify_finds_the_sender_from_the_register(self, protection: SignThenEncrypt) -> None:
        """Without a claimed sender, the party whose registered certificate signed is the sender."""
        packet = protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)
        assert protection.identify(packet, receiver_her=FROYA).signer_her == HITRA


class TestProfileShape:
    """The packet is what HITS 1216 / Helsenorge.Messaging prescribe."""

    def test_content_type_is_the_amqp_one(self, protection: SignThenEncrypt) -> None:
        """The contentType to put on the wire is signed-and-enveloped-data."""
        assert protection.content_type == CONTENT_TYPE
        assert CONTENT_TYPE == "application/pkcs7-mime; smime-type=signed-and-enveloped-data"

    def test_envelope_is_aes256_to_issuer_and_serial(self, protection: SignThenEncrypt) -> None:
        """EnvelopedData: AES-256-CBC, RSA PKCS#1 v1.5 key transport, recipient by issuer and serial."""
        packet = protection.protect(XML, sender_her=FROYA, receiver_her=STOLAV)
        info = acms.ContentInfo.load(packet)
        assert info["content_type"].native == "enveloped_data"
        enveloped = info["content"]
        algorithm = enveloped["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"]
        assert algorithm.dotted == "2.16.840.1.101.3.4.1.42"
        (recipient,) = list(enveloped["recipient_infos"])
        assert recipient.chosen["key_encryption_algorithm"]["algorithm"].dotted == "1.2.840.113549.1.1.1"
        rid = recipient.chosen["rid"]
        receiver = protection.keys.encryption_cert(STOLAV)
        assert rid.name == "issuer_and_serial_number"
        assert rid.chosen["serial_number"].native == receiver.cert.serial_number

    def test_signed_data_embeds_content_and_certificate(self, template: World, protection: SignThenEncrypt) -> None:
        """SignedData: content embedded as is, SHA-256 RSA, signer certificate included, signer by issuer+serial."""
        packet = protection.protect(XML, sender_her=FROYA, receiver_her=HITRA)
        inner = _decrypt_with_openssl(template, packet, HITRA)
        signed = acms.ContentInfo.load(inner)["content"]
        assert signed["encap_content_info"]["content"].native == XML
        (signer,) = list(signed["signer_infos"])
        assert signer["digest_algorithm"]["algorithm"].native == "sha256"
        assert signer["sid"].name == "issuer_and_serial_number"
        signing = protection.keys.signing_cert(FROYA)
        assert signing is not None
        embedded = [c.chosen["tbs_certificate"]["serial_number"].native for c in signed["certificates"]]
        assert signing.cert.serial_number in embedded


def _decrypt_with_openssl(world: World, packet: bytes, receiver: str) -> bytes:
    folder = world.pki / receiver
    return openssl(
        "cms", "-decrypt", "-inform", "DER", "-binary", "-recip", folder / "enc.crt", "-inkey", folder / "enc.key",
        stdin=packet,
    )  # fmt: skip


class TestRollover:
    def test_previous_key_opens_packets_made_before_the_rollover(self, world: World) -> None:
        """After a certificate rollover, packets encrypted to the old certificate still open (previous key)."""
        before = world.protection().protect(XML, sender_her=FROYA, receiver_her=HITRA)
        rollover_encryption(world.pki, world.party(HITRA))
        after = world.protection()
        verified = after.unprotect(before, receiver_her=HITRA, claimed_sender_her=FROYA)
        assert verified.content == XML
        assert verified.previous_key is True
        fresh = after.protect(XML, sender_her=FROYA, receiver_her=HITRA)
        assert after.unprotect(fresh, receiver_her=HITRA, claimed_sender_her=FROYA).previous_key is False

    def test_without_the_previous_key_old_packets_fail(self, world: World) -> None:
        """Once the previous key is retired, a packet to the old certificate is a decryption failure."""
        before = world.protection().protect(XML, sender_her=FROYA, receiver_her=HITRA)
        rollover_encryption(world.pki, world.party(HITRA))
        (world.pki / HITRA / "prev-enc.key").unlink()
        (world.pki / HITRA / "prev-enc.crt").unlink()
        with pytest.raises(DecryptionFailed):
            world.protection().open(before, receiver_her=HITRA, claimed_sender_her=FROYA)


class TestKeys:
    def test_packet_for_a_party_we_hold_no_key_for(self, protection: SignThenEncrypt) -> None:
        """A packet encrypted to someone else's certificate cannot be opened with any of our keys."""
        packet = protection.protect(XML, sender_her=FROYA, receiver_her=STOLAV)
        with pytest.raises(DecryptionFailed):
            protection.open(packet, receiver_her=STOLAV, claimed_sender_her=FROYA)

    def test_missing_key_names_the_file_looked_for(self, world: World) -> None:
        """A local party without its dev key files gets KeyUnavailable naming the path it looked at."""
        (world.pki / HITRA / "sign.key").unlink()
        protection = world.protection()
        with pytest.raises(KeyUnavailable, match=r"sign\.key"):
            protection.protect(XML, sender_her=HITRA, receiver_her=FROYA)

    def test_certificates_lists_every_certificate_with_expiry(self, protection: SignThenEncrypt) -> None:
        """Each party's signing and encryption certificate and the trust anchor are listed with not_after."""
        infos = protection.certificates()
        roles = {(i.her_id, i.role) for i in infos}
        for her in (FROYA, HITRA, STOLAV):
            assert {(her, "sign"), (her, "encrypt")} <= roles
        assert (None, "trust-anchor") in roles
        now = datetime.now(UTC)
        assert all(now + timedelta(days=365) < i.not_after for i in infos)


class TestNoProtection:
    def test_null_object_passes_content_through(self) -> None:
        """Protection "none": the packet is the XML, and the claimed sender is taken at its word."""
        protection = NoProtection()
        assert protection.protect(XML, sender_her=FROYA, receiver_her=HITRA) == XML
        verified = protection.unprotect(XML, receiver_her=HITRA, claimed_sender_her=FROYA)
        assert (verified.content, verified.signer_her, protection.content_type) == (XML, FROYA, "application/xml")

    def test_build_protection_follows_the_setting(self, template: World) -> None:
        """build_protection gives the null object for protection = "none" and CMS otherwise."""
        none = replace(template.settings, security=replace(template.settings.security, protection="none"))
        assert isinstance(build_protection(none, make_register()), NoProtection)
        cms = build_protection(template.settings, make_register())
        assert isinstance(cms, SignThenEncrypt)
        assert isinstance(cms, MessageProtection)


class TestCoreBoundary:
    def test_security_package_imports_no_http_client(self) -> None:
        """The framework-free core: importing gateway.security pulls in neither aiohttp nor store/adapters."""
        code = (
            "import sys, gateway.security, gateway.security.devpki;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'adapters')"
            " or m.startswith(('gateway.store', 'gateway.api', 'gateway.pipeline'))];"
            "print(bad); sys.exit(1 if bad else 0)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

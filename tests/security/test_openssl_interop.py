"""Interop with the openssl CLI in both directions, in-process and through the ``gateway`` command."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from gateway.config import PROJECT_ROOT
from gateway.security import SignThenEncrypt
from tests.security.conftest import FROYA, HITRA, STOLAV, XML, World, gateway_cli, openssl


class Variant(NamedTuple):
    sign: tuple[str, ...] = ()  # extra `openssl cms -sign` options
    encrypt: tuple[str, ...] = ("-aes256",)  # extra `openssl cms -encrypt` options
    recipient: tuple[str, ...] = ()  # options after -recip (they apply to that recipient)


#: What peers produce: Helsenorge's default, OAEP, other AES sizes, SHA-1, no signed attributes, SKI
#: identifiers, and BER streaming (indefinite lengths, chunked octet strings).
VARIANTS = {
    "aes256-pkcs1v15-sha256": Variant(),
    "aes256-oaep": Variant(recipient=("-keyopt", "rsa_padding_mode:oaep")),
    "aes256-oaep-sha256": Variant(
        recipient=("-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256", "-keyopt", "rsa_mgf1_md:sha256")
    ),
    "aes128": Variant(encrypt=("-aes128",)),
    "aes192": Variant(encrypt=("-aes192",)),
    "sha1-signature": Variant(sign=("-md", "sha1")),
    "no-signed-attributes": Variant(sign=("-noattr",)),
    "subject-key-identifiers": Variant(sign=("-keyid",), encrypt=("-aes256", "-keyid")),
    "ber-streamed": Variant(sign=("-stream",), encrypt=("-aes256", "-stream")),
}


def openssl_packet(world: World, variant: Variant, *, sender: str = STOLAV, receiver: str = FROYA) -> bytes:
    """What a peer running openssl sends: ``cms -sign -binary -nodetach``, then ``cms -encrypt -binary``."""
    signer, recipient = world.pki / sender, world.pki / receiver
    signed = openssl(
        "cms", "-sign", "-binary", "-nodetach", "-outform", "DER",
        "-signer", signer / "sign.crt", "-inkey", signer / "sign.key", *variant.sign,
        stdin=XML,
    )  # fmt: skip
    return openssl(
        "cms", "-encrypt", "-binary", "-outform", "DER", *variant.encrypt,
        "-recip", recipient / "enc.crt", *variant.recipient,
        stdin=signed,
    )  # fmt: skip


class TestOurPacketsInOpenssl:
    def test_openssl_decrypts_and_verifies_our_packet(
        self, template: World, protection: SignThenEncrypt, tmp_path: Path
    ) -> None:
        """openssl cms -decrypt then -verify (dev CA, CRL checked) yields the input bytes exactly."""
        store = tmp_path / "ca-and-crl.pem"  # openssl cms reads CRLs from its CA store
        store.write_bytes((template.pki / "ca.crt").read_bytes() + (template.pki / "ca.crl").read_bytes())
        packet = protection.protect(XML, sender_her=FROYA, receiver_her=STOLAV)
        receiver = template.pki / STOLAV
        signed = openssl(
            "cms", "-decrypt", "-inform", "DER", "-binary",
            "-recip", receiver / "enc.crt", "-inkey", receiver / "enc.key",
            stdin=packet,
        )  # fmt: skip
        content = openssl(
            "cms", "-verify", "-inform", "DER", "-binary",
            "-CAfile", store, "-crl_check",
            stdin=signed,
        )  # fmt: skip
        assert content == XML

    def test_openssl_refuses_our_packet_for_another_recipient(
        self, template: World, protection: SignThenEncrypt
    ) -> None:
        """The oracle is not blind: openssl cannot open a packet made for someone else."""
        import subprocess

        packet = protection.protect(XML, sender_her=FROYA, receiver_her=STOLAV)
        other = template.pki / HITRA
        done = subprocess.run(
            ["openssl", "cms", "-decrypt", "-inform", "DER", "-binary",
             "-recip", str(other / "enc.crt"), "-inkey", str(other / "enc.key")],
            input=packet, capture_output=True, check=False,
        )  # fmt: skip
        assert done.returncode != 0


class TestOpensslPacketsInGateway:
    @pytest.mark.parametrize("name", list(VARIANTS))
    def test_unprotect_opens_openssl_packet(self, name: str, template: World, protection: SignThenEncrypt) -> None:
        """Our unprotect opens openssl's sign+encrypt in every variant peers use, content byte for byte."""
        packet = openssl_packet(template, VARIANTS[name])
        verified = protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert verified.content == XML
        assert verified.signer_her == STOLAV


class TestCli:
    @pytest.mark.parametrize("name", ["aes256-oaep", "sha1-signature"])
    def test_gateway_unprotect_opens_openssl_packet(self, name: str, template: World) -> None:
        """`gateway unprotect` prints the verified XML on stdout and the verified signer on stderr."""
        packet = openssl_packet(template, VARIANTS[name])
        done = gateway_cli("unprotect", "--to", FROYA, "--from", STOLAV, "--config", template.config, stdin=packet)
        assert done.returncode == 0, done.stderr
        assert done.stdout == XML
        stderr = done.stderr.decode()
        assert f"signer {STOLAV}" in stderr
        assert "serialNumber=7200101" in stderr

    def test_gateway_protect_then_openssl_and_gateway_open_it(self, template: World) -> None:
        """`gateway protect` output opens in openssl and in `gateway unprotect` without --from."""
        protected = gateway_cli("protect", "--from", FROYA, "--to", HITRA, "--config", template.config, stdin=XML)
        assert protected.returncode == 0, protected.stderr
        receiver = template.pki / HITRA
        signed = openssl(
            "cms", "-decrypt", "-inform", "DER", "-binary",
            "-recip", receiver / "enc.crt", "-inkey", receiver / "enc.key",
            stdin=protected.stdout,
        )  # fmt: skip
        assert openssl("cms", "-verify", "-inform", "DER", "-binary", "-CAfile", template.pki / "ca.crt",
                       stdin=signed) == XML  # fmt: skip
        opened = gateway_cli("unprotect", "--to", HITRA, "--config", template.config, stdin=protected.stdout)
        assert opened.returncode == 0, opened.stderr
        assert opened.stdout == XML
        assert f"signer {FROYA}" in opened.stderr.decode()

    def test_gateway_unprotect_warns_when_the_signer_is_not_the_payloads_sender(self, template: World) -> None:
        """Signed by Frøya, but the message names Hitra as its sender: the packet opens, and stderr says so
        (the gateway would refuse it as abuse:spoofing-attack). Signed by Hitra itself: no warning."""
        message = (PROJECT_ROOT / "fixtures" / "messages" / "dialogmelding-1.1" / "helsefaglig-dialog-foresporsel.xml")
        body = message.read_bytes()  # from Hitra (7100201)
        for signer, warned in ((FROYA, True), (HITRA, False)):
            receiver = HITRA if signer == FROYA else FROYA
            packet = gateway_cli("protect", "--from", signer, "--to", receiver, "--config", template.config, stdin=body)
            opened = gateway_cli("unprotect", "--to", receiver, "--config", template.config, stdin=packet.stdout)
            assert opened.returncode == 0 and opened.stdout == body, opened.stderr
            stderr = opened.stderr.decode()
            assert ("warning:" in stderr) is warned, stderr
            if warned:
                assert f"names sender {HITRA}" in stderr and f"signed by {FROYA}" in stderr
                assert "abuse:spoofing-attack" in stderr

    def test_gateway_unprotect_reports_spoofing_with_its_codes(self, template: World) -> None:
        """A signer that is not the claimed sender: non-zero exit, event code and transport condition on stderr."""
        packet = openssl_packet(template, VARIANTS["aes256-pkcs1v15-sha256"])
        done = gateway_cli("unprotect", "--to", FROYA, "--from", HITRA, "--config", template.config, stdin=packet)
        assert done.returncode == 2
        assert done.stdout == b""
        stderr = done.stderr.decode()
        assert "security.spoofing_attack" in stderr
        assert "abuse:spoofing-attack" in stderr

    def test_gateway_unprotect_reports_bad_signature_with_apprec_code(self, template: World) -> None:
        """A changed signature byte: exit 2 with the event code and AppRec S01 on stderr."""
        signer = template.pki / STOLAV
        signed = bytearray(
            openssl("cms", "-sign", "-binary", "-nodetach", "-outform", "DER",
                    "-signer", signer / "sign.crt", "-inkey", signer / "sign.key", stdin=XML)
        )  # fmt: skip
        signed[-1] ^= 0x01  # the last byte of the DER is the last byte of the signature value
        packet = openssl("cms", "-encrypt", "-binary", "-outform", "DER", "-aes256",
                         "-recip", template.pki / FROYA / "enc.crt", stdin=bytes(signed))  # fmt: skip
        done = gateway_cli("unprotect", "--to", FROYA, "--from", STOLAV, "--config", template.config, stdin=packet)
        assert done.returncode == 2
        stderr = done.stderr.decode()
        assert "security.signature_invalid" in stderr
        assert "AppRec S01" in stderr

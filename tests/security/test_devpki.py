"""The dev PKI (``gateway pki init`` / ``ensure_dev_pki``) and the key store's start-up checks."""

from __future__ import annotations

import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.registry import Certificates
from gateway.security.devpki import ensure_dev_pki, init_dev_pki, reissue_crl, revoke
from gateway.security.keys import KeyStore
from tests.security.conftest import FROYA, HITRA, PARTIES, STOLAV, World, make_register

PARTY_FILES = ("sign.crt", "sign.key", "enc.crt", "enc.key")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _snapshot(pki: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(pki.rglob("*")) if p.is_file()}


class TestLayout:
    def test_every_party_gets_a_signing_and_an_encryption_pair(self, template: World) -> None:
        """pki/ca.crt, ca.key, ca.crl and pki/<her-id>/{sign,enc}.{crt,key} for local and remote parties."""
        assert all((template.pki / name).is_file() for name in ("ca.crt", "ca.key", "ca.crl"))
        for her in (FROYA, HITRA, STOLAV):
            assert all((template.pki / her / name).is_file() for name in PARTY_FILES)

    def test_subject_names_organisation_service_and_her_id(self, template: World) -> None:
        """O = organisation, OU = service, serialNumber = HER-id: an operator sees whose certificate it is."""
        subject = _cert(template.pki / FROYA / "sign.crt").subject
        value = {a.oid: a.value for a in subject}
        assert value[NameOID.ORGANIZATION_NAME] == "Frøya kommune"
        assert value[NameOID.ORGANIZATIONAL_UNIT_NAME] == "Pleie og omsorg, hjemmetjenesten"
        assert value[NameOID.SERIAL_NUMBER] == FROYA

    def test_key_usages_follow_the_profile(self, template: World) -> None:
        """Signing: digitalSignature + nonRepudiation. Encryption: keyEncipherment + dataEncipherment."""
        sign = _cert(template.pki / HITRA / "sign.crt").extensions.get_extension_for_class(x509.KeyUsage).value
        enc = _cert(template.pki / HITRA / "enc.crt").extensions.get_extension_for_class(x509.KeyUsage).value
        assert (sign.digital_signature, sign.content_commitment, sign.key_encipherment) == (True, True, False)
        assert (enc.key_encipherment, enc.data_encipherment, enc.digital_signature) == (True, True, False)

    def test_crl_is_signed_by_the_ca_and_current_for_a_week(self, template: World) -> None:
        """The CRL verifies with the CA key and its nextUpdate lies about a week ahead."""
        ca = _cert(template.pki / "ca.crt")
        crl = x509.load_pem_x509_crl((template.pki / "ca.crl").read_bytes())
        assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        assert crl.next_update_utc is not None
        ahead = crl.next_update_utc - datetime.now(UTC)
        assert timedelta(days=6) < ahead <= timedelta(days=7)

    def test_private_keys_are_readable_by_the_owner_only(self, template: World) -> None:
        """Key files are written 0600; certificates are world-readable."""
        assert stat.S_IMODE((template.pki / FROYA / "sign.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((template.pki / "ca.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((template.pki / FROYA / "sign.crt").stat().st_mode) == 0o644


class TestIdempotence:
    def test_second_run_writes_nothing(self, world: World) -> None:
        """ensure_dev_pki on a complete PKI keeps every file byte for byte."""
        before = _snapshot(world.pki)
        ensure_dev_pki(world.settings, world.register)
        assert init_dev_pki(world.settings, world.register) == []
        assert _snapshot(world.pki) == before

    def test_missing_party_files_are_made_with_the_existing_ca(self, world: World) -> None:
        """A deleted party pair is re-issued by the same CA; other parties are untouched."""
        (world.pki / HITRA / "enc.key").unlink()
        froya = (world.pki / FROYA / "sign.crt").read_bytes()
        written = init_dev_pki(world.settings, world.register)
        assert world.pki / HITRA / "enc.key" in written
        assert (world.pki / FROYA / "sign.crt").read_bytes() == froya
        assert _cert(world.pki / HITRA / "enc.crt").issuer == _cert(world.pki / "ca.crt").subject

    def test_force_makes_a_new_ca(self, world: World) -> None:
        """--force replaces the CA and every party certificate."""
        old_ca = _cert(world.pki / "ca.crt")
        init_dev_pki(world.settings, world.register, force=True)
        new_ca = _cert(world.pki / "ca.crt")
        assert new_ca.serial_number != old_ca.serial_number
        assert _cert(world.pki / STOLAV / "sign.crt").issuer == new_ca.subject
        world.protection().protect(b"<x/>", sender_her=FROYA, receiver_her=STOLAV)

    def test_stale_crl_is_reissued_with_its_revocations(self, world: World) -> None:
        """A CRL near its nextUpdate is re-issued on start, keeping what it revoked."""
        revoked = _cert(world.pki / HITRA / "sign.crt")
        revoke(world.pki, revoked)
        reissue_crl(world.pki, next_update=datetime.now(UTC) + timedelta(hours=2))
        assert world.pki / "ca.crl" in init_dev_pki(world.settings, world.register)
        crl = x509.load_pem_x509_crl((world.pki / "ca.crl").read_bytes())
        assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
        assert crl.next_update_utc is not None and crl.next_update_utc > datetime.now(UTC) + timedelta(days=6)

    def test_parties_with_their_own_certificates_are_skipped(self, world: World, tmp_path: Path) -> None:
        """A party whose register entry names certificate files gets no dev certificates."""
        own = replace(PARTIES[2], certificates=Certificates(sign_cert=world.pki / STOLAV / "sign.crt"))
        settings = replace(world.settings, gateway=replace(world.settings.gateway, data_dir=tmp_path / "fresh"))
        init_dev_pki(settings, make_register([PARTIES[0], own]))
        assert (tmp_path / "fresh" / "pki" / FROYA / "sign.crt").is_file()
        assert not (tmp_path / "fresh" / "pki" / STOLAV).exists()


class TestKeyStoreStartUp:
    def test_register_path_that_does_not_exist_is_a_config_error(self, world: World) -> None:
        """A certificate path the register gives must exist: a typo fails at start-up, naming the path."""
        typo = replace(PARTIES[0], certificates=Certificates(sign_cert=world.pki / FROYA / "sign.crtt"))
        with pytest.raises(ConfigError, match=r"sign\.crtt"):
            KeyStore.load(make_register([typo]), world.pki)

    def test_key_that_does_not_match_its_certificate_is_a_config_error(self, world: World) -> None:
        """A private key file that belongs to another certificate fails at start-up."""
        (world.pki / FROYA / "sign.key").write_bytes((world.pki / FROYA / "enc.key").read_bytes())
        with pytest.raises(ConfigError, match="does not belong"):
            KeyStore.load(world.register, world.pki)


class TestPkiCommand:
    def test_pki_init_makes_and_then_keeps(
        self, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`gateway pki init` makes the dev PKI in --data-dir, and a second run says nothing is to do."""
        data = tmp_path / "elsewhere"
        assert main(["pki", "init", "--config", str(world.config), "--data-dir", str(data)]) == 0
        assert (data / "pki" / FROYA / "sign.crt").is_file()
        assert "files written" in capsys.readouterr().out
        assert main(["pki", "init", "--config", str(world.config), "--data-dir", str(data)]) == 0
        assert "nothing to do" in capsys.readouterr().out

    def test_pki_list_shows_expiry(self, world: World, capsys: pytest.CaptureFixture[str]) -> None:
        """`gateway pki list` prints one line per certificate: HER-id, role, not-after, days left."""
        assert main(["pki", "list", "--config", str(world.config)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert any(line.startswith(f"{FROYA}\tsign\t") for line in lines)
        assert any(line.startswith("-\ttrust-anchor\t") for line in lines)
        assert len(lines) == 3 * 2 + 1

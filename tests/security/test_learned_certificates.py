"""Certificates a transport learns for a remote party (from its CPP/CPA, docs/cppa.md): used where no file
pins one, checked for trust like any other, replaced when the party's certificate changes - and never over a
certificate the region file (or the dev layout) pins, nor for a local party."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from structlog.testing import capture_logs

from gateway.errors import CertificateUntrusted, KeyUnavailable, SpoofingDetected
from gateway.security import cms_decrypt
from gateway.security.certs import CertRef, load_certificate_file
from gateway.security.devpki import DevCa
from gateway.security.keys import KeyPair, KeyStore, load_private_key
from gateway.security.protection import SignThenEncrypt

from .conftest import FROYA, PARTIES, STOLAV, XML, World, make_register, seal


def _unpin(world: World, tmp_path: Path) -> tuple[SignThenEncrypt, KeyPair, KeyPair]:
    """St. Olavs' dev files moved out of the PKI (no file pins them); its pairs, as its own gateway holds them."""
    aside = tmp_path / "stolav-own"
    shutil.move(world.pki / STOLAV, aside)
    pairs = [
        KeyPair(load_certificate_file(aside / f"{name}.crt"), load_private_key(aside / f"{name}.key"))
        for name in ("sign", "enc")
    ]
    return world.protection(), pairs[0], pairs[1]


def _from_cpa(ref: CertRef) -> CertRef:
    return CertRef(ref.cert, "CPA test-cpa, party HER-id 7200101, certId x")


def test_a_learned_pair_signs_encrypts_and_verifies_as_a_pinned_one(world: World, tmp_path: Path) -> None:
    protection, sign, enc = _unpin(world, tmp_path)
    froya = world.pair(FROYA, "enc")
    packet = seal(XML, sign, froya.ref)
    with pytest.raises(KeyUnavailable, match="no CPP/CPA has given one"):
        protection.protect(XML, sender_her=FROYA, receiver_her=STOLAV)
    # nothing to verify with yet (its CPP/CPA could not be had, say): the packet waits, before any key is used
    with pytest.raises(KeyUnavailable, match="signing certificate for 7200101"):
        protection.unprotect(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)

    with capture_logs() as logs:
        protection.learn(STOLAV, signing=_from_cpa(sign.ref), encryption=_from_cpa(enc.ref))
        protection.learn(STOLAV, signing=_from_cpa(sign.ref), encryption=_from_cpa(enc.ref))  # the same: quiet
    assert [(e["event"], e["role"]) for e in logs] == [
        ("security.certificate_learned", "sign"),
        ("security.certificate_learned", "encrypt"),
    ]
    opened = protection.open(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
    assert opened.content == XML and opened.signer_her == STOLAV and opened.untrusted is None
    sealed = protection.protect(XML, sender_her=FROYA, receiver_her=STOLAV)
    inner, _used = cms_decrypt.decrypt(sealed, (enc,), receiver=STOLAV)
    assert XML in inner  # encrypted to the learned certificate: St. Olavs' own key opens it
    held = {(c.her_id, c.role): c.source for c in protection.certificates()}
    assert held[(STOLAV, "sign")].startswith("CPA test-cpa")


def test_a_renewed_signing_certificate_is_taken_beside_the_one_it_replaces(world: World, tmp_path: Path) -> None:
    """While a party's certificate is renewed one CPA may name the new one and another the old: both verify,
    until a third pushes the oldest out."""
    protection, sign, enc = _unpin(world, tmp_path)
    protection.learn(STOLAV, signing=_from_cpa(sign.ref), encryption=_from_cpa(enc.ref))
    froya = world.pair(FROYA, "enc")
    ca = DevCa.load(world.pki)

    def renewed() -> KeyPair:
        cert, key = ca.issue(sign.ref.cert.subject, purpose="sign")
        return KeyPair(CertRef(cert, "renewed"), key)

    second, third = renewed(), renewed()
    with capture_logs() as logs:
        protection.learn(STOLAV, signing=_from_cpa(second.ref), encryption=None)  # encryption: kept as it was
        protection.learn(STOLAV, signing=_from_cpa(sign.ref), encryption=None)  # another CPA, still the old one
    assert [e["event"] for e in logs] == ["security.certificate_learned"]  # the old one again is no news
    for signer in (sign, second):
        opened = protection.open(seal(XML, signer, froya.ref), receiver_her=FROYA, claimed_sender_her=STOLAV)
        assert opened.content == XML
    assert protection.keys.encryption_cert(STOLAV).fingerprint == enc.ref.fingerprint

    protection.learn(STOLAV, signing=_from_cpa(third.ref), encryption=None)
    assert protection.open(seal(XML, third, froya.ref), receiver_her=FROYA, claimed_sender_her=STOLAV).content == XML
    with pytest.raises(SpoofingDetected):  # second was the oldest of the kept two when third came
        protection.open(seal(XML, second, froya.ref), receiver_her=FROYA, claimed_sender_her=STOLAV)
    assert protection.keys.owner_of_signing_cert(second.ref) is None
    assert protection.keys.owner_of_signing_cert(third.ref) == STOLAV


def test_the_same_certificate_in_another_encoding_keeps_its_owner(world: World, tmp_path: Path) -> None:
    """Issuer, serial and key the same, the bytes not (another validity): one certificate to the signer index."""
    protection, sign, _enc = _unpin(world, tmp_path)
    ca = DevCa.load(world.pki)
    cert = sign.ref.cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc - timedelta(days=1))
    )
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    other = CertRef(builder.sign(ca.key, hashes.SHA256()), "")
    assert other.fingerprint != sign.ref.fingerprint and other.identity() == sign.ref.identity()
    protection.learn(STOLAV, signing=_from_cpa(sign.ref), encryption=None)
    protection.learn(STOLAV, signing=_from_cpa(other), encryption=None)
    assert protection.keys.owner_of_signing_cert(sign.ref) == STOLAV


def test_a_learned_certificate_from_an_untrusted_issuer_is_not_used(world: World, tmp_path: Path) -> None:
    protection, sign, enc = _unpin(world, tmp_path)
    stranger, _key = DevCa.create("Not a trusted issuer").issue(enc.ref.cert.subject, purpose="encrypt")
    protection.learn(STOLAV, signing=_from_cpa(sign.ref), encryption=_from_cpa(CertRef(stranger, "")))
    with pytest.raises(CertificateUntrusted, match="CPA test-cpa"):  # the error names where it came from
        protection.protect(XML, sender_her=FROYA, receiver_her=STOLAV)


def test_a_pinned_certificate_wins_and_the_difference_is_said_once(world: World) -> None:
    protection = world.protection()  # St. Olavs pinned by its dev-layout files
    pinned = protection.keys.encryption_cert(STOLAV)
    other, _key = DevCa.load(world.pki).issue(pinned.cert.subject, purpose="encrypt")
    with capture_logs() as logs:
        for _ in range(3):
            protection.learn(STOLAV, signing=None, encryption=_from_cpa(CertRef(other, "")))
    assert [e["event"] for e in logs] == ["security.certificate_pinned"]
    assert logs[0]["her_id"] == STOLAV and logs[0]["role"] == "encrypt"
    assert protection.keys.encryption_cert(STOLAV) == pinned


def test_another_organisations_signing_certificate_is_not_learned(world: World, tmp_path: Path) -> None:
    """A CPP/CPA that gives St. Olavs Frøya's signing certificate would let packets Frøya signed pass as St.
    Olavs': refused, and said once at error level (it is offered again at every lookup)."""
    protection, _sign, enc = _unpin(world, tmp_path)
    froyas = protection.keys.signing_cert(FROYA)
    assert froyas is not None
    with capture_logs() as logs:
        for _ in range(3):
            protection.learn(STOLAV, signing=_from_cpa(froyas), encryption=_from_cpa(enc.ref))
    assert [e["event"] for e in logs] == ["security.certificate_conflict", "security.certificate_learned"]
    assert protection.keys.signing_cert(STOLAV) is None
    assert protection.keys.owner_of_signing_cert(froyas) == FROYA


def test_parties_of_one_organisation_share_its_certificate(world: World, tmp_path: Path) -> None:
    """One enterprise certificate commonly serves several HER-ids of one organisation: each learns it."""
    _protection, sign, _enc = _unpin(world, tmp_path)
    emergency = replace(PARTIES[2], her_id="7200102", name="Orkdal sjukehus, akuttmottak")
    keys = KeyStore.load(make_register([*PARTIES, emergency]), world.pki)
    with capture_logs() as logs:
        keys.learn(STOLAV, signing=_from_cpa(sign.ref), encryption=None)
        keys.learn("7200102", signing=_from_cpa(sign.ref), encryption=None)
    assert [e["event"] for e in logs] == ["security.certificate_learned"] * 2
    assert keys.verifiers("7200102") == keys.verifiers(STOLAV) == [_from_cpa(sign.ref)]
    assert keys.owner_of_signing_cert(sign.ref) == STOLAV  # the first to learn it


def test_a_local_party_or_a_stranger_learns_nothing(world: World) -> None:
    protection = world.protection()
    ours = protection.keys.signing_cert(FROYA)
    assert ours is not None
    other, _key = DevCa.load(world.pki).issue(ours.cert.subject, purpose="sign")
    protection.learn(FROYA, signing=_from_cpa(CertRef(other, "")), encryption=None)
    protection.learn("9999999", signing=_from_cpa(CertRef(other, "")), encryption=None)
    assert protection.keys.signing_cert(FROYA) == ours
    assert protection.keys.signing_cert("9999999") is None
    assert protection.keys.owner_of_signing_cert(CertRef(other, "")) is None

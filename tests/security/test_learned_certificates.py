"""Certificates a transport learns for a remote party (from its CPP/CPA, docs/cppa.md): used where no file
pins one, checked for trust like any other, replaced when the party's certificate changes - and never over a
certificate the region file (or the dev layout) pins, nor for a local party."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.errors import CertificateUntrusted, KeyUnavailable, SpoofingDetected
from gateway.security import cms_decrypt
from gateway.security.certs import CertRef, load_certificate_file
from gateway.security.devpki import DevCa
from gateway.security.keys import KeyPair, load_private_key
from gateway.security.protection import SignThenEncrypt

from .conftest import FROYA, STOLAV, XML, World, seal


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
    with pytest.raises(SpoofingDetected):  # no certificate to verify with: refused before any key is used
        protection.open(packet, receiver_her=FROYA, claimed_sender_her=STOLAV)

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


def test_a_changed_signing_certificate_replaces_the_old_one(world: World, tmp_path: Path) -> None:
    protection, sign, enc = _unpin(world, tmp_path)
    protection.learn(STOLAV, signing=_from_cpa(sign.ref), encryption=_from_cpa(enc.ref))
    froya = world.pair(FROYA, "enc")
    old_packet = seal(XML, sign, froya.ref)
    new_cert, new_key = DevCa.load(world.pki).issue(sign.ref.cert.subject, purpose="sign")
    renewed = KeyPair(CertRef(new_cert, "renewed"), new_key)

    protection.learn(STOLAV, signing=_from_cpa(renewed.ref), encryption=None)  # encryption: kept as it was

    assert protection.open(seal(XML, renewed, froya.ref), receiver_her=FROYA, claimed_sender_her=STOLAV).content == XML
    with pytest.raises(SpoofingDetected):
        protection.open(old_packet, receiver_her=FROYA, claimed_sender_her=STOLAV)
    assert protection.keys.owner_of_signing_cert(sign.ref) is None
    assert protection.keys.owner_of_signing_cert(renewed.ref) == STOLAV
    assert protection.keys.encryption_cert(STOLAV).fingerprint == enc.ref.fingerprint


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


def test_another_partys_signing_certificate_is_not_learned(world: World, tmp_path: Path) -> None:
    """A CPP/CPA that gives St. Olavs Frøya's signing certificate would let packets Frøya signed pass as St.
    Olavs': refused, and said at error level."""
    protection, _sign, enc = _unpin(world, tmp_path)
    froyas = protection.keys.signing_cert(FROYA)
    assert froyas is not None
    with capture_logs() as logs:
        protection.learn(STOLAV, signing=_from_cpa(froyas), encryption=_from_cpa(enc.ref))
    assert [e["event"] for e in logs] == ["security.certificate_conflict", "security.certificate_learned"]
    assert protection.keys.signing_cert(STOLAV) is None
    assert protection.keys.owner_of_signing_cert(froyas) == FROYA


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

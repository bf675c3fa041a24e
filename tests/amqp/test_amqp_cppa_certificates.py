"""Certificates and processes from the CPP/CPA (docs/cppa.md): the hub's register pins no certificate for St.
Olavs, and the CPPA double serves CPAs (made here with the dev PKI's certificates, whose keys the test holds)
- so every signature the hub checks and every packet it encrypts to St. Olavs rests on the CPA, with the same
trust checks as a pinned certificate; and a message whose kind the CPA does not let its sender send is refused
on the bus before anything is decrypted."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from cryptography import x509

from gateway.security.devpki import DevCa
from gateway.store.base import DeliveryState
from gateway.testing.cppa_agreements import AgreementParty, agreement
from gateway.testing.cppa_server import CONTROL, CppaControl, cppa_app, running
from gateway.testing.rabbit import Broker

from ..conftest import require_shared
from ..region import ADMIN, fixture_bytes, with_msg_id
from .amqp_region import AmqpRegion, all_acknowledged, amqp_region, delivery_to, reached
from .raw import nothing_on, peer_message, put, take

EPIKRISE = "epikrise-1.2/epikrise-med-kopi-hjemmetjeneste.xml"  # St. Olavs 7200101 -> GP 7102001, copy to Frøya
TO_STOLAV = "plo-innleggelsesrapport-1.6/innleggelsesrapport-kopi-legevakt.xml"  # Skaun -> 7200101, copy to LiO
STOLAV, GP, SKAUN = "7200101", "7102001", "7100701"


@pytest.fixture(autouse=True)
def _shared() -> None:
    require_shared()


def _cert(pki: Path, her_id: str, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((pki / her_id / name).read_bytes())


def _party(pki: Path, her_id: str, sends: tuple[str, ...], receives: tuple[str, ...]) -> AgreementParty:
    return AgreementParty(her_id, _cert(pki, her_id, "sign.crt"), _cert(pki, her_id, "enc.crt"), sends, receives)


def _serve(control: CppaControl, ours: AgreementParty, theirs: AgreementParty, number: int) -> None:
    """The CPA of the pair, asked either way round (the service answers both)."""
    document = agreement(f"00000000-0000-4000-8000-{number:012d}", [ours, theirs])
    answers = control.answers
    answers[f"Agreements/HerIds/{ours.her_id}/{theirs.her_id}"] = (200, document)
    answers[f"Agreements/HerIds/{theirs.her_id}/{ours.her_id}"] = (200, document)


@contextlib.asynccontextmanager
async def _region(tmp_path: Path, broker: Broker, **more: object) -> AsyncIterator[tuple[AmqpRegion, CppaControl]]:
    app = cppa_app()
    async with running(app) as url, amqp_region(tmp_path, broker, unpinned=(STOLAV,), cppa_url=url, **more) as r:
        yield r, app[CONTROL]


def _agree_all(r: AmqpRegion, control: CppaControl, stolav: AgreementParty, kinds: Iterable[str]) -> None:
    """A CPA between St. Olavs and every party of the hub: St. Olavs sends ``kinds`` and AppRecs."""
    for number, party in enumerate(p for p in r.register if p.local):
        ours = _party(r.pki, party.her_id, sends=("APPREC", *kinds), receives=("APPREC", *kinds))
        _serve(control, ours, stolav, number)


async def test_an_epikrise_verifies_and_its_apprecs_are_encrypted_with_the_cpas_certificates(
    tmp_path: Path, broker: Broker
) -> None:
    async with _region(tmp_path, broker) as (r, control):
        stolav = _party(r.pki, STOLAV, sends=("EPIKRISE", "APPREC"), receives=("APPREC",))
        _agree_all(r, control, stolav, ["EPIKRISE"])
        with pytest.raises(Exception, match="no CPP/CPA has given one"):  # nothing before the first lookup
            r.hub.protection.protect(b"<x/>", sender_her=GP, receiver_her=STOLAV)
        record, _ = await r.stolav.submit(with_msg_id(fixture_bytes(EPIKRISE)), ADMIN)

        async def acknowledged() -> bool:
            return await all_acknowledged(r.stolav, [record.id])

        await r.until(acknowledged, what="both deliveries settled by AppRecs encrypted to the CPA's certificate")
        view = await r.stolav.store.get(record.id)
        assert view is not None and {d.apprec.status for d in view.deliveries if d.apprec} == {"1"}
        [received] = await r.hub.store.inbox(GP)
        assert received.msg_id == record.msg_id
        held = {(c.her_id, c.role): c for c in r.hub.protection.certificates()}
        assert "CPA 00000000-0000-4000-8000-" in held[(STOLAV, "sign")].source
        assert stolav.encryption is not None
        assert held[(STOLAV, "encrypt")].serial == format(stolav.encryption.serial_number, "x")


async def test_an_untrusted_certificate_in_the_cpa_fails_the_delivery_naming_it(tmp_path: Path, broker: Broker) -> None:
    """A CPA's certificate passes the same trust checks as a pinned one: an encryption certificate from an
    issuer the hub does not trust is not used, and the failure says where it came from."""
    async with _region(tmp_path, broker, hub_her_ids=[SKAUN], stolav_her_ids=[]) as (r, control):
        stranger = DevCa.create("Not a trusted issuer")
        subject = _cert(r.pki, STOLAV, "enc.crt").subject
        untrusted, _key = stranger.issue(subject, purpose="encrypt")
        stolav = AgreementParty(STOLAV, _cert(r.pki, STOLAV, "sign.crt"), untrusted, ("APPREC",), ("INNLEGGELSE",))
        _serve(control, _party(r.pki, SKAUN, ("INNLEGGELSE",), ("APPREC",)), stolav, 1)
        record, _ = await r.hub.submit(with_msg_id(fixture_bytes(TO_STOLAV)), ADMIN)

        await r.until(reached(r.hub, record.id, STOLAV, DeliveryState.DEAD), what="the delivery to St. Olavs given up")
        delivery = await delivery_to(r.hub, record.id, STOLAV)
        assert delivery is not None
        assert "does not chain to a trust anchor" in (delivery.last_error or "")
        assert "CPA 00000000-0000-4000-8000-000000000001" in (delivery.last_error or "")
        assert await nothing_on(broker, r.vhost, f"{STOLAV}_async")  # nothing went out encrypted to it


async def test_a_kind_the_cpa_does_not_let_the_sender_send_is_refused_before_decryption(
    tmp_path: Path, broker: Broker
) -> None:
    async with _region(tmp_path, broker, hub_her_ids=[GP], stolav_her_ids=[]) as (r, control):
        stolav = _party(r.pki, STOLAV, sends=("DIALOG_INNBYGGER_EKONTAKT",), receives=("APPREC",))
        _serve(control, _party(r.pki, GP, ("APPREC",), ("DIALOG_INNBYGGER_EKONTAKT",)), stolav, 2)
        # not even CMS: the profile step refuses it before anything is opened
        sent = peer_message(b"not a CMS packet at all", from_her=STOLAV, to_her=GP)
        await put(broker, r.vhost, f"/exchange/{r.namespace}/{GP}_async", sent)
        report = await take(broker, r.vhost, f"{STOLAV}_error")
        assert report.properties["errorCondition"] == "transport:unsupported-message"
        assert report.properties["originalMessageId"] == sent.id
        assert "00000000-0000-4000-8000-000000000002" in report.properties["errorDescription"]
        assert await nothing_on(broker, r.vhost, f"{GP}_async")  # the original accepted
        assert await r.hub.store.inbox(GP) == []

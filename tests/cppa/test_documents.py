"""CPP and CPA documents read from Helsenorge.Messaging's own test files (../shared/standards/nhn/cppa):
HER-ids, queues, certificates (loaded as X.509 with `cryptography`), processes, cpa ids - and hostile or
unexpected documents refused with a clear error, never an lxml traceback, a crash or a hang."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509

from adapters.cppa.documents import (
    CPPA_NS,
    Agreement,
    CppaDocumentError,
    CppaNoDocument,
    Party,
    Queues,
    parse_agreement,
    parse_profile,
)
from gateway.errors import ConfigError, ForbiddenMarkup, GatewayError, MessageTooLarge, NotWellFormed
from gateway.security.devpki import DevCa
from gateway.testing.cppa_agreements import AgreementParty, agreement
from gateway.testing.cppa_server import cppa_dir

from .conftest import shared_file

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def all_files(kind: str) -> list[str]:
    folder = cppa_dir()
    return sorted(p.name for p in folder.glob(f"*-{kind}_*.xml")) if folder.is_dir() else ["(missing)"]


def check_certificates(party: Party) -> None:
    """Every certificate loads as X.509; the signing one has nonRepudiation, the encryption one
    keyEncipherment - as Helsenorge.Messaging chooses them."""
    for certificate in party.certificates:
        x509.load_der_x509_certificate(certificate.der)
    if party.signing is not None:
        assert party.signing.cert.extensions.get_extension_for_class(x509.KeyUsage).value.content_commitment
    if party.encryption is not None:
        assert party.encryption.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


class TestSharedFiles:
    @pytest.mark.parametrize("name", all_files("CPP"))
    def test_every_profile(self, name: str) -> None:
        data = shared_file(name).read_bytes()
        if b"i:nil" in data[:300]:
            with pytest.raises(CppaNoDocument):
                parse_profile(data)
            return
        profile = parse_profile(data)
        party = profile.party
        assert profile.cpp_id is not None and GUID.fullmatch(profile.cpp_id)
        assert party.queues.asynchronous and party.queues.asynchronous.endswith("_async")
        assert party.queues.synchronous and party.queues.synchronous.endswith("_sync")
        assert party.queues.error is None  # no document names an error queue: the default applies
        assert party.signing is not None and party.encryption is not None
        assert party.signing.cert != party.encryption.cert
        check_certificates(party)
        assert "Dialog_Innbygger_Digitalbruker" in party.processes
        assert party.can_receive("APPREC") and party.can_send("DIALOG_INNBYGGER_DIGITALBRUKER")

    @pytest.mark.parametrize("name", all_files("CPA"))
    def test_every_agreement(self, name: str) -> None:
        data = shared_file(name).read_bytes()
        if b"i:nil" in data[:300]:
            with pytest.raises(CppaNoDocument):
                parse_agreement(data)
            return
        agreement = parse_agreement(data)
        declared = re.search(rb'cpaid="([^"]+)"', data)
        assert declared is not None and agreement.cpa_id == declared.group(1).decode()
        for party in agreement.parties:
            assert party.queues.asynchronous == f"{party.her_id}_async"
            assert party.queues.synchronous == f"{party.her_id}_sync"
            assert party.signing is not None
            check_certificates(party)

    def test_a_messaging_cpa(self) -> None:
        agreement = parse_agreement(shared_file("hm-Messaging-CPA_93252.xml").read_bytes())
        assert agreement.cpa_id == "49391409-e528-4919-b4a3-9ccdab72c8c1"
        assert [p.her_id for p in agreement.parties] == ["93238", "93252"]
        other = agreement.counterparty("93238")
        assert other is not None and other.her_id == "93252"
        assert agreement.counterparty("93252") is agreement.party("93238")
        assert agreement.counterparty("1234") is None
        assert other.queues == Queues("93252_async", "93252_sync", None)
        assert other.queues.or_defaults("93252") == Queues("93252_async", "93252_sync", "93252_error")
        assert other.signing is not None and other.encryption is not None
        assert "DDFL" in other.signing.subject and "DDFL" in other.encryption.subject
        assert "93252" in other.signing.source and agreement.cpa_id in other.signing.source

    def test_registries_cpa_ids(self) -> None:
        assert parse_agreement(shared_file("hm-Registries-CPA_93252.xml").read_bytes()).cpa_id == (
            "9333f3de-e85c-4c26-9066-6800055b1b8e"
        )
        v2 = parse_agreement(shared_file("hm-Registries-CPA_v2_51795e2c-9d39-44e0-9168-5bee38f20819.xml").read_bytes())
        assert v2.cpa_id == "51795e2c-9d39-44e0-9168-5bee38f20819"
        assert {p.her_id: p.queues.asynchronous for p in v2.parties} == {
            "8093238": "8093238_async",
            "8093240": "8093240_async",
        }

    def test_certificates_by_key_usage_not_by_name(self) -> None:
        """The Rest files name the encryption certificate ``enc_cert_93238``; one Messaging CPA carries a
        signing certificate under ``certId="enc"``: the key usage decides, not the name."""
        rest = parse_profile(shared_file("hm-Registries-CPP_Rest_93238.xml").read_bytes()).party
        plain = parse_profile(shared_file("hm-Registries-CPP_93238.xml").read_bytes()).party
        assert [c.cert_id for c in rest.certificates] == ["enc_cert_93238", "sign"]
        assert rest.encryption is not None and plain.encryption is not None
        assert rest.encryption.cert == plain.encryption.cert
        changed = parse_agreement(shared_file("hm-Messaging-CPA_93252_ChangedSignedCertificate.xml").read_bytes())
        party = changed.party("93238")
        assert party is not None
        assert {c.cert_id: c.purposes for c in party.certificates} == {
            "sign": frozenset({"signing"}),
            "enc": frozenset({"signing"}),
        }
        assert party.encryption is None and party.signing is not None and "DDFL" in party.signing.subject

    def test_her_id_from_the_document_not_the_file_name(self) -> None:
        assert parse_profile(shared_file("hm-Messaging-CPP_91462.xml").read_bytes()).party.her_id == "92462"

    def test_name_is_kept_but_not_in_repr(self) -> None:
        party = parse_profile(shared_file("hm-Messaging-CPP_93238.xml").read_bytes()).party
        assert party.name == "Digitale innbyggertjenester"
        assert "Digitale" not in repr(party) and "MII" not in repr(party)


def cpp() -> bytes:
    return shared_file("hm-Messaging-CPP_93238.xml").read_bytes()


@pytest.mark.timeout(30)
class TestHostile:
    def refused(self, data: bytes, *, agreement: bool = False, max_bytes: int | None = None) -> CppaDocumentError:
        with pytest.raises(CppaDocumentError) as caught:
            if max_bytes is None:
                (parse_agreement if agreement else parse_profile)(data)
            else:
                (parse_agreement if agreement else parse_profile)(data, max_bytes=max_bytes)
        error = caught.value
        assert isinstance(error, ConfigError) and isinstance(error, GatewayError) and not error.retryable
        assert error.event.startswith("cppa.")
        return error

    def test_entity_bomb(self) -> None:
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + b"".join(
                b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i else b"&lol;" * 10) for i in range(9)
            )
            + b"]><lolz>&lol8;</lolz>"
        )
        error = self.refused(bomb)
        assert isinstance(error.__cause__, ForbiddenMarkup)

    def test_external_entity(self) -> None:
        xxe = (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<tns:CollaborationProtocolProfile xmlns:tns="'
            + CPPA_NS.encode()
            + b'">&e;</tns:CollaborationProtocolProfile>'
        )
        error = self.refused(xxe)
        assert "root:" not in error.message

    def test_undeclared_entity(self) -> None:
        self.refused(b'<x xmlns="' + CPPA_NS.encode() + b'">&e;</x>')

    def test_huge_body(self) -> None:
        error = self.refused(cpp() + b" " * (4 * 1024 * 1024))
        assert isinstance(error.__cause__, MessageTooLarge)
        self.refused(cpp(), max_bytes=1000)

    def test_deep_nesting(self) -> None:
        deep = b'<x xmlns="' + CPPA_NS.encode() + b'">' + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</x>"
        self.refused(deep)

    @pytest.mark.parametrize("data", [b"", b"   ", b'{"herId": 93238}', b"\x00\x01\x02binary", b"<unclosed"])
    def test_not_xml(self, data: bytes) -> None:
        error = self.refused(data)
        assert isinstance(error.__cause__, NotWellFormed)

    def test_wrong_namespace(self) -> None:
        error = self.refused(cpp().replace(CPPA_NS.encode(), b"urn:example:not-cppa"))
        assert "not an ebXML CPPA 2.0" in error.message

    def test_a_cpa_is_not_a_cpp(self) -> None:
        cpa = shared_file("hm-Messaging-CPA_93252.xml").read_bytes()
        self.refused(cpa)
        self.refused(cpp(), agreement=True)

    def test_a_certificate_that_is_not_one(self) -> None:
        data = re.sub(rb"<ds:X509Certificate>MII[^<]{10}", b"<ds:X509Certificate>!!notbase64", cpp(), count=1)
        assert "is not a DER X.509 certificate" in self.refused(data).message
        garbage = re.sub(rb"<ds:X509Certificate>[^<]+", b"<ds:X509Certificate>AAAA", cpp(), count=1)
        self.refused(garbage)

    def test_no_her_id(self) -> None:
        self.refused(cpp().replace(b'tns:type="HER"', b'tns:type="ENH"'))
        self.refused(cpp().replace(b">93238</tns:PartyId>", b">93x238</tns:PartyId>"))

    def test_a_cpa_with_one_party_or_no_id(self) -> None:
        cpa = shared_file("hm-Messaging-CPA_93252.xml").read_bytes()
        one = re.sub(rb"<tns:PartyInfo .*?</tns:PartyInfo>", b"", cpa, count=1, flags=re.S)
        assert "two PartyInfo" in self.refused(one, agreement=True).message
        self.refused(re.sub(rb'tns:cpaid="[^"]+"', b"", cpa), agreement=True)
        for odd in (b"49391409 e528", b"49391409&#10;e528", b"x" * 101, "cpa-æøå".encode()):
            # the id travels as the AMQP property cpaId: nothing but a plain identifier is taken
            self.refused(re.sub(rb'tns:cpaid="[^"]+"', b'tns:cpaid="' + odd + b'"', cpa), agreement=True)
        same = cpa.replace(b">93252</tns:PartyId>", b">93238</tns:PartyId>")
        self.refused(same, agreement=True)

    def test_a_queue_name_that_is_not_one(self) -> None:
        self.refused(cpp().replace(b"DigitalDialog/93238_async", b"DigitalDialog/93238 async;rm"))

    def test_nil_placeholders(self, tmp_path: Path) -> None:
        with pytest.raises(CppaNoDocument):
            parse_profile(shared_file("hm-Messaging-CPP_94867.xml").read_bytes())
        with pytest.raises(CppaNoDocument):
            parse_agreement(shared_file("hm-Messaging-CPA_94867.xml").read_bytes())


def test_agreement_value_is_frozen() -> None:
    agreement = parse_agreement(shared_file("hm-Messaging-CPA_93252.xml").read_bytes())
    assert isinstance(agreement, Agreement)
    with pytest.raises(AttributeError):
        agreement.cpa_id = "x"  # type: ignore[misc]


def test_a_cpa_made_for_tests_reads_as_nhns_do() -> None:
    """The CPAs tests serve (gateway/testing/cppa_agreements.py) are read by the same parser, to the same
    parties, certificates, queues and actions - so a test built on one proves what an NHN CPA would."""
    ca = DevCa.create("cppa test CA")
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "party")])
    (sign, _), (enc, _) = ca.issue(name, purpose="sign"), ca.issue(name, purpose="encrypt")
    made = agreement(
        "00000000-0000-4000-8000-000000000009",
        [
            AgreementParty("7100101", sign, enc, sends=("APPREC",), receives=("EPIKRISE",)),
            AgreementParty("7200101", None, None, sends=("EPIKRISE",), receives=("APPREC",)),
        ],
    )
    cpa = parse_agreement(made)
    assert cpa.cpa_id == "00000000-0000-4000-8000-000000000009"
    ours = cpa.party("7100101")
    assert ours is not None and ours.signing is not None and ours.encryption is not None
    assert (ours.signing.cert, ours.encryption.cert) == (sign, enc)
    assert ours.queues == Queues("7100101_async", "7100101_sync", None)
    assert ours.can_send("APPREC") and ours.can_receive("EPIKRISE") and not ours.can_send("EPIKRISE")
    theirs = cpa.counterparty("7100101")
    assert theirs is not None and theirs.her_id == "7200101" and theirs.signing is None

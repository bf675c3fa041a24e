"""The HM peer bot's own pieces, without a broker: its header check in Helsenorge.Messaging's order, its
error-report format, and its CMS telling a packet that will not decrypt from one whose signature fails."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from proton import Message

from adapters.amqp.fields import content_type_of, read_error
from gateway.config import PROJECT_ROOT
from gateway.registry import load_register
from gateway.security import cms
from gateway.security.certs import load_certificate_file
from gateway.testing.hm_peer_crypto import PeerCrypto
from gateway.testing.hm_peer_formats import HM_CMS_CONTENT_TYPE, HmRefusal, business_message, error_report, read_header
from gateway.testing.hm_peer_replies import PeerReplies, swapped_reply

from ..region import fixture_bytes, shared_pki

STOLAV, GP, SKAUN = "7200101", "7102001", "7100701"
CONTENT = b"<?xml version='1.0'?><x>synthetic</x>"


@pytest.fixture(name="pki")
def _pki(tmp_path: Path) -> Path:
    return shared_pki(tmp_path, load_register(PROJECT_ROOT / "config" / "sio-region.toml"))


def _refusal(crypto: PeerCrypto, packet: bytes, from_her: str) -> HmRefusal:
    with pytest.raises(HmRefusal) as caught:
        crypto.unprotect(packet, from_her=from_her)
    return caught.value


def test_the_peer_tells_decryption_failures_from_bad_signatures(pki: Path) -> None:
    stolav, gp = PeerCrypto(pki, STOLAV), PeerCrypto(pki, GP)
    assert stolav.unprotect(gp.protect(CONTENT, to_her=STOLAV), from_her=GP) == CONTENT
    assert _refusal(stolav, b"garbage", GP).condition == "transport:decryption-failed"
    to_skaun = gp.protect(CONTENT, to_her=SKAUN)  # not for us: our key is not among its recipients
    assert _refusal(stolav, to_skaun, GP).condition == "transport:decryption-failed"
    assert _refusal(stolav, gp.protect(CONTENT, to_her=STOLAV), SKAUN).condition == "transport:invalid-certificate"
    signed = cms.sign(CONTENT, gp.signer)
    tampered = signed.replace(b"synthetic", b"SYNTHETIC")
    recipient = load_certificate_file(pki / STOLAV / "enc.crt")
    assert _refusal(stolav, cms.encrypt(tampered, recipient), GP).condition == "transport:invalid-signature"


def _message(**changes: object) -> Message:
    message = business_message(
        b"x", from_her=SKAUN, to_her=STOLAV, subject="PLO", queue=f"{STOLAV}_async", reply_to=None
    )
    for name, value in changes.items():
        setattr(message, name, value)
    return message


def test_the_header_check_names_every_missing_field_in_hms_order() -> None:
    message = _message(subject=None, content_type=None)
    assert isinstance(message.properties, dict)
    message.properties = {"fromHerId": SKAUN}
    with pytest.raises(HmRefusal) as caught:
        read_header(message)
    assert caught.value.condition == "transport:invalid-field-value"
    assert caught.value.data == ("toHerId", "Label", "applicationTimeStamp", "ContentType")
    header = read_header(_message())
    assert (header.from_her, header.to_her, header.content_type) == (SKAUN, STOLAV, HM_CMS_CONTENT_TYPE)
    with pytest.raises(HmRefusal) as caught:
        read_header(_message(properties={"fromHerId": "x1", "toHerId": STOLAV, "applicationTimeStamp": "2026-01-01"}))
    assert caught.value.data == ("FromHerId", "x1")


def test_an_error_report_is_in_hms_format_and_the_gateway_reads_it() -> None:
    original = _message(id=str(uuid.uuid4()))
    report = error_report(
        original,
        reporter=STOLAV,
        sender=SKAUN,
        condition="transport:invalid-signature",
        description="d",
        data=["a", "b"],
    )
    assert re.fullmatch(r"[0-9a-f]{32}", str(report.id))
    assert report.address == f"{SKAUN}_error" and report.subject == "PLO"
    assert content_type_of(report) is None and report.reply_to is None and report.correlation_id is None
    assert isinstance(report.properties, dict)
    assert re.fullmatch(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d", report.properties["receiverTimeStamp"])
    read = read_error(report)
    assert read is not None
    assert (read.original_message_id, read.condition, read.data) == (original.id, "transport:invalid-signature", "a;b")
    assert (read.from_her, read.to_her) == (STOLAV, SKAUN) and read.receiver_timestamp is not None


def test_the_default_sync_answer_swaps_sender_and_receiver_under_a_new_msg_id() -> None:
    request = fixture_bytes("dialogmelding-1.1/helsefaglig-dialog-foresporsel.xml")
    replies = PeerReplies()
    asked, answered = replies.read(request), replies.read(swapped_reply(request))
    assert asked.envelope is not None and answered.envelope is not None
    assert (answered.envelope.sender_her, answered.envelope.receiver_her) == (
        asked.envelope.receiver_her,
        asked.envelope.sender_her,
    )
    assert answered.msg_id not in (None, asked.msg_id)

"""The HITS 1216 fields without a broker: link addresses in both formats, queue names from the register's
full addresses, and what a received message must carry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from proton import Message

from adapters.amqp.fields import (
    CMS_CONTENT_TYPE,
    Addresses,
    FieldProblem,
    canonical_id,
    queue_name,
    read_error,
    read_packet,
    read_time,
)


def test_link_addresses_in_both_formats() -> None:
    v1 = Addresses("NHNTestServiceBus", "v1")
    assert v1.sender("8142987_async") == "/exchange/NHNTestServiceBus/8142987_async"
    assert v1.receiver("8142987_async") == "/amq/queue/8142987_async"
    v2 = Addresses("NHN Test/Bus", "v2")
    assert v2.sender("8142987_async") == "/exchanges/NHN%20Test%2FBus/8142987_async"
    assert v2.receiver("8142987_async") == "/queues/8142987_async"
    assert Addresses("", "v1").sender("q") == "q" and Addresses("", "v2").sender("q") == "/queues/q"


def test_queue_names_from_the_registers_full_addresses() -> None:
    assert queue_name("sb.test.nhn.no/DigitalDialog/93238_async") == "93238_async"
    assert queue_name("93238_async") == "93238_async"
    with pytest.raises(ValueError):
        queue_name("sb.test.nhn.no/DigitalDialog/")


def test_times_and_ids_as_real_peers_write_them() -> None:
    assert read_time("07/02/2026 12:31:17") == datetime(2026, 7, 2, 12, 31, 17, tzinfo=UTC)
    assert read_time("2026-07-02T12:31:17Z") == datetime(2026, 7, 2, 12, 31, 17, tzinfo=UTC)
    assert read_time("2026-07-02T14:31:17+02:00") == datetime(2026, 7, 2, 12, 31, 17, tzinfo=UTC)
    assert read_time("yesterday") is None
    some = uuid.uuid4()
    assert canonical_id(some.hex) == canonical_id(str(some).upper()) == str(some)
    assert canonical_id("not-a-uuid") == "not-a-uuid"


def _message(**changes: object) -> Message:
    message = Message(
        body=b"cms",
        inferred=True,
        id=str(uuid.uuid4()),
        subject="EPIKRISE",
        content_type=CMS_CONTENT_TYPE,
        properties={"fromHerId": "7200101", "toHerId": "7102001", "applicationTimeStamp": "2026-11-27T10:00:00Z"},
    )
    for name, value in changes.items():
        setattr(message, name, value)
    return message


def test_a_good_message_reads_as_a_packet() -> None:
    packet = read_packet(_message(), queue="7102001_async")
    assert (packet.from_her, packet.to_her, packet.subject) == ("7200101", "7102001", "EPIKRISE")
    assert packet.body == b"cms" and packet.content_type == CMS_CONTENT_TYPE


def test_every_missing_or_wrong_field_is_named_never_its_value() -> None:
    with pytest.raises(FieldProblem) as missing:
        read_packet(_message(subject=None, properties={"toHerId": "7102001"}), queue="q")
    assert missing.value.condition == "transport:invalid-field-value"  # missing or wrong, as the C# library says
    assert missing.value.names == ("fromHerId", "Label", "applicationTimeStamp")
    secret = "01818012345"  # a synthetic national id (month + 80)
    with pytest.raises(FieldProblem) as wrong:
        read_packet(
            _message(
                content_type="text/html",
                properties={"fromHerId": f"x{secret}", "toHerId": "7102001", "applicationTimeStamp": "soon"},
            ),
            queue="q",
        )
    assert wrong.value.condition == "transport:invalid-field-value"
    assert wrong.value.names == ("fromHerId", "applicationTimeStamp", "ContentType")
    assert secret not in wrong.value.description


def test_an_error_report_without_an_original_id_is_not_a_report() -> None:
    assert read_error(_message(properties={"errorCondition": "transport:invalid-signature"})) is None
    report = read_error(
        _message(properties={"originalMessageId": "ABC", "errorCondition": "", "receiverTimeStamp": "x"})
    )
    assert report is not None and report.condition == "transport:unknown" and report.receiver_timestamp is None


def test_a_body_over_the_cap_is_refused_before_any_crypto() -> None:
    read_packet(_message(), queue="7102001_async", max_body=3)  # b"cms": at the cap, taken
    with pytest.raises(FieldProblem) as large:
        read_packet(_message(), queue="7102001_async", max_body=2)
    assert (large.value.condition, large.value.names) == ("transport:invalid-field-value", ("body",))

"""The edi2 adapter's ledger: which NHN message an AppRec answers, when the gateway and NHN name the parties
by different HER-ids of the same chain."""

from __future__ import annotations

import asyncio

from adapters.edi2.ledger import Ledger
from gateway.transport import MemoryState

MSG_ID = "4a1c2e9e-6c1b-4a52-9d7e-0c3c1d3f6a10"


async def test_an_apprec_finds_the_nhn_message_it_answers() -> None:
    ledger = Ledger(MemoryState())
    await ledger.received(MSG_ID, "nhn-1", sender="8142519", receiver="7102001")
    # both agree
    assert await ledger.answered_by(MSG_ID, to_her="8142519", from_her="7102001") == "nhn-1"
    # the gateway answers the person's HER-id under the office NHN knows as the sender
    assert await ledger.answered_by(MSG_ID, to_her="8142520", from_her="7102001") == "nhn-1"
    # NHN routed it to the organisation; the gateway answers as the service the message names
    assert await ledger.answered_by(MSG_ID, to_her="8142519", from_her="7102000") == "nhn-1"
    # neither agrees: not ours to answer through NHN
    assert await ledger.answered_by(MSG_ID, to_her="8142520", from_her="7102000") is None
    assert await ledger.answered_by("another-msg-id", to_her="8142519", from_her="7102001") is None


async def test_one_msg_id_to_two_of_our_her_ids_is_answered_for_each() -> None:
    """A message with a copy receiver in the region comes as one NHN message per receiver (or one with
    two deliveries): each receiver's AppRec goes with the NHN id it came with."""
    ledger = Ledger(MemoryState())
    await ledger.received(MSG_ID, "nhn-prim", sender="8142519", receiver="7102001")
    await ledger.received(MSG_ID, "nhn-copy", sender="8142519", receiver="7100101")
    assert await ledger.answered_by(MSG_ID, to_her="8142519", from_her="7102001") == "nhn-prim"
    assert await ledger.answered_by(MSG_ID, to_her="8142519", from_her="7100101") == "nhn-copy"
    await ledger.received(MSG_ID, "nhn-prim", sender="8142519", receiver="7102001")  # redelivered: kept once
    assert await ledger.answered_by(MSG_ID, to_her="8142519", from_her="7102001") == "nhn-prim"


async def test_pending_list_keeps_concurrent_sends() -> None:
    ledger = Ledger(MemoryState())
    await asyncio.gather(*(ledger.sent(f"nhn-{i}", f"ref-{i}", "7200101", poll=True) for i in range(50)))
    assert sorted(await ledger.pending()) == sorted(f"nhn-{i}" for i in range(50))
    await ledger.drop_pending({"nhn-0", "nhn-1"})
    assert len(await ledger.pending()) == 48
    sent = await ledger.sent_record("nhn-7")
    assert sent is not None and (sent.reference, sent.receiver) == ("ref-7", "7200101")
    await ledger.settled("nhn-7")
    assert await ledger.sent_record("nhn-7") is None

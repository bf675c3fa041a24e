"""The edi2 adapter's ledger: which NHN message an AppRec answers (when the gateway and NHN name the
receiver by different HER-ids of one chain), the v2 status list, and the HER-ids to catch up."""

from __future__ import annotations

import asyncio

from adapters.edi2.ledger import Ledger
from gateway.transport import MemoryState

MSG_ID = "4a1c2e9e-6c1b-4a52-9d7e-0c3c1d3f6a10"


async def test_an_apprec_finds_the_nhn_message_it_answers() -> None:
    ledger = Ledger(MemoryState())
    await ledger.received(MSG_ID, "nhn-1", sender="8142519", receiver="7102001")
    found = await ledger.answered_by(MSG_ID, to_her="8142519", from_her="7102001")
    assert found is not None and (found.nhn_id, found.receiver) == ("nhn-1", "7102001")
    # NHN routed it to the organisation; the gateway answers as the service the message names: the AppRec
    # is posted as the HER-id NHN gave it to
    found = await ledger.answered_by(MSG_ID, to_her="8142519", from_her="7102000")
    assert found is not None and (found.nhn_id, found.receiver) == ("nhn-1", "7102001")
    # another sender reusing the MsgId never gets our answer to this one
    assert await ledger.answered_by(MSG_ID, to_her="8999999", from_her="7102001") is None
    assert await ledger.answered_by("another-msg-id", to_her="8142519", from_her="7102001") is None


async def test_one_msg_id_to_two_of_our_her_ids_is_answered_for_each() -> None:
    """A message with a copy receiver in the region comes as one NHN message per receiver (or one with
    two deliveries): each receiver's AppRec goes with the NHN id it came with."""
    ledger = Ledger(MemoryState())
    await ledger.received(MSG_ID, "nhn-prim", sender="8142519", receiver="7102001")
    await ledger.received(MSG_ID, "nhn-copy", sender="8142519", receiver="7100101")
    await ledger.received(MSG_ID, "nhn-other", sender="8999999", receiver="7102001")  # another sender's
    prim = await ledger.answered_by(MSG_ID, to_her="8142519", from_her="7102001")
    copy = await ledger.answered_by(MSG_ID, to_her="8142519", from_her="7100101")
    assert prim is not None and prim.nhn_id == "nhn-prim"
    assert copy is not None and copy.nhn_id == "nhn-copy"
    await ledger.received(MSG_ID, "nhn-prim", sender="8142519", receiver="7102001")  # redelivered: kept once
    prim = await ledger.answered_by(MSG_ID, to_her="8142519", from_her="7102001")
    assert prim is not None and prim.nhn_id == "nhn-prim"


async def test_a_her_id_left_out_is_read_again_up_to_where_the_others_got() -> None:
    ledger = Ledger(MemoryState())
    await ledger.processed(1040)
    await ledger.left_out("7100701")
    await ledger.processed(1090)
    await ledger.left_out("7100701")  # still out: the first time counts
    assert await ledger.catch_ups() == {}  # not back yet
    await ledger.processed(1200)
    await ledger.back("7100701")
    assert await ledger.catch_ups() == {"7100701": (1040, 1200)}
    await ledger.caught_up("7100701", 1100)
    assert await ledger.catch_ups() == {"7100701": (1100, 1200)}
    await ledger.caught_up("7100701", None)
    assert await ledger.catch_ups() == {}


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

"""Makes tests/data/store-wave1.sqlite: a store as the first wave's gateway wrote it (before schema versions),
for tests/test_store_migrations.py. Synthetic content only - no patient, no name, no national id.

Run from a checkout of the first wave's last commit (3235292), with this project's venv:

    git worktree add /tmp/wave1 3235292
    PYTHONPATH=/tmp/wave1 .venv/bin/python tests/data/make_store_wave1.py tests/data/store-wave1.sqlite
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gateway.store.base import AppRecOutcome, DeliveryState, Direction, MessageState, NewDelivery, NewMessage
from gateway.store.sqlite import SqliteStore

NOW = 1_795_000_000.0  # 2026-11-18
HUB, STOLAV, AKUTT, FROYA = "7100101", "7200101", "7200102", "7100102"


def message(n: int, direction: Direction, sender: str, receiver: str, state: MessageState) -> NewMessage:
    msg_id = f"00000000-0000-4000-8000-{n:012d}"
    return NewMessage(
        id=f"wave1-{n}-message",
        direction=direction,
        kind="dialogmelding-1.1",
        msg_type="DIALOG_HELSEFAGLIG",
        msg_id=msg_id,
        sender_her=sender,
        receiver_her=receiver,
        state=state,
        payload=f"<MsgHead><MsgInfo><MsgId>{msg_id}</MsgId></MsgInfo></MsgHead>".encode(),
        client="wave1-fixture",
        dedupe_key=f"{direction}|{sender}|{msg_id}",
        reason="made for the schema migration test",
    )


async def main(path: Path) -> None:
    async with SqliteStore(path) as store:
        acknowledged = message(1, Direction.OUT, HUB, STOLAV, MessageState.ACCEPTED)
        dead = message(2, Direction.OUT, HUB, AKUTT, MessageState.ACCEPTED)
        for m in (acknowledged, dead):
            await store.add_message(m, [NewDelivery(m.receiver_her or "", "PRIM", "http")], now=NOW)
        claims = await store.claim_due(owner="wave1", now=NOW + 1, limit=10, lease_s=60)
        by_message = {c.message.id: c.delivery.id for c in claims}
        await store.mark_sent(by_message[acknowledged.id], owner="wave1", now=NOW + 2, reason="sent via http")
        await store.mark_dead(by_message[dead.id], owner="wave1", now=NOW + 2, code="E21", error="no such receiver")
        apprec = message(3, Direction.IN, STOLAV, HUB, MessageState.RECEIVED)
        await store.apply_apprec(
            apprec,
            original_msg_id=acknowledged.msg_id,
            original_sender_her_ids=[HUB],
            answering_her_ids=[STOLAV],
            outcome=AppRecOutcome("1", (), apprec.id, NOW + 3),
            now=NOW + 3,
        )
        inbound = message(4, Direction.IN, STOLAV, FROYA, MessageState.RECEIVED)
        await store.add_message(inbound, [NewDelivery(FROYA, "EHR", "ehr:inbox", state=DeliveryState.INBOX)], now=NOW)
        await store.pause("7300101", actor="wave1-fixture", now=NOW + 4)
        await store.set_meta("adapter:edi2:offset", "42")


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.unlink(missing_ok=True)
    asyncio.run(main(target))

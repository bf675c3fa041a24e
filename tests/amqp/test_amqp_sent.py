"""What the amqp transport remembers of its sends for the receivers' error reports (adapters/amqp/sent.py):
found for the window, settled by its report, and forgotten day by day after it - in the gateway's real
SQLite store (the adapter state's range delete), so the meta table does not grow with the traffic."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from pathlib import Path

from adapters.amqp.sent import SentLedger
from gateway.service import StoreState
from gateway.store.sqlite import SqliteStore

DAY = date(2026, 11, 28)


class Calendar:
    def __init__(self) -> None:
        self.day = DAY

    def __call__(self) -> date:
        return self.day


async def test_a_send_is_found_for_the_window_then_forgotten(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "gateway.sqlite") as store:
        state = StoreState(store, "adapter:amqp:")
        calendar = Calendar()
        ledger = SentLedger(state, window_days=3, today=calendar)
        first, second, settled = (str(uuid.uuid4()) for _ in range(3))
        await ledger.remember(first, "message-1", "7200101")
        await ledger.remember(settled, "message-3", "7200101")
        found = await ledger.find(settled)
        assert found is not None
        await ledger.settle(found)
        assert await ledger.find(settled) is None

        calendar.day = DAY + timedelta(days=2)  # the last day of the first send's window
        await ledger.remember(second, "message-2", "7300101")
        sent = await ledger.find(first.replace("-", "").upper())  # as a peer may write it back
        assert sent is not None and (sent.reference, sent.receiver) == ("message-1", "7200101")

        calendar.day = DAY + timedelta(days=3)  # past it: the first day is forgotten at the day's first send
        assert await ledger.find(first) is None  # (not looked for beyond the window either)
        await ledger.remember(str(uuid.uuid4()), "message-4", "7200101")
        assert await store.get_meta(found.key.replace(settled, first)) is None  # gone from the store
        found_second = await ledger.find(second)
        assert found_second is not None and found_second.receiver == "7300101"


async def test_entries_of_the_old_format_go_at_the_first_clean_up(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "gateway.sqlite") as store:
        await store.set_meta("adapter:amqp:sent:0f3c2a4e-1b2c-4d5e-8f90-123456789abc", "old 7200101")
        await store.set_meta("adapter:amqp:sent:ffffffff-1b2c-4d5e-8f90-123456789abc", "old 7200101")
        await store.set_meta("adapter:edi2:offset", "42")  # another adapter's state stays
        ledger = SentLedger(StoreState(store, "adapter:amqp:"), today=Calendar())
        await ledger.remember(str(uuid.uuid4()), "message-1", "7200101")
        assert await store.get_meta("adapter:amqp:sent:0f3c2a4e-1b2c-4d5e-8f90-123456789abc") is None
        assert await store.get_meta("adapter:amqp:sent:ffffffff-1b2c-4d5e-8f90-123456789abc") is None
        assert await store.get_meta("adapter:edi2:offset") == "42"

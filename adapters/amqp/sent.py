"""Which delivery a message sent on the bus belongs to, for the receiver's error report, which names only
our AMQP message-id (HITS 1216's ``originalMessageId``).

Each send is kept in the transport's durable state under the day it was sent, ``sent@<YYYY-MM-DD>:<id>``,
for ``window_days``: a report comes when the receiver reads the message, so within its time on the queue.
A report found settles its entry; once a day the days before the window are forgotten in one range delete,
so the state does not grow with the traffic. Entries of the format before this one (``sent:<id>``, never
forgotten) go at the first such clean-up; a report about one of those is logged as unmatched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from adapters.amqp.fields import canonical_id
from gateway.transport import TransportState

__all__ = ["Sent", "SentLedger"]

_PREFIX = "sent@"
_LEGACY = ("sent:", "sent;")  # every key of the old format: ';' follows ':'


@dataclass(frozen=True)
class Sent:
    """A message we sent: the gateway's message id (the packet's reference) and its receiver."""

    key: str
    reference: str
    receiver: str


class SentLedger:
    def __init__(
        self,
        state: TransportState,
        *,
        window_days: int = 14,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ) -> None:
        self.state = state
        self.window_days = max(1, window_days)
        self._today = today
        self._cleaned_on: date | None = None

    async def remember(self, message_id: str, reference: str, receiver: str) -> None:
        """Keep a send (before it goes: a report may come back before the broker's acknowledgement)."""
        today = self._today()
        if self._cleaned_on != today:
            await self.state.forget(_PREFIX, _key(today - timedelta(days=self.window_days - 1), ""))
            if self._cleaned_on is None:
                await self.state.forget(*_LEGACY)
            self._cleaned_on = today
        await self.state.set(_key(today, message_id), f"{reference} {receiver}")

    async def find(self, message_id: str) -> Sent | None:
        """The send a report names, looked for in each day of the window, newest first."""
        today = self._today()
        for back in range(self.window_days):
            key = _key(today - timedelta(days=back), message_id)
            value = await self.state.get(key)
            if value is not None:
                reference, _, receiver = value.partition(" ")
                return Sent(key, reference, receiver)
        return None

    async def settle(self, sent: Sent) -> None:
        """The report was taken: its send need not be kept."""
        await self.state.set(sent.key, None)


def _key(day: date, message_id: str) -> str:
    return f"{_PREFIX}{day.isoformat()}:{canonical_id(message_id) if message_id else ''}"

"""The simulated Meldingstjener's global notification log: what happened to which message, for whom.

Offsets grow with gaps, as at NHN, where other parties' notifications live between ours; a reader filters
by receiver HER-id and resumes *after* the last offset it processed (v3's ``Offset``), or waits on the log
for the next write (the SSE stream).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.clock import Clock

__all__ = ["Notification", "NotificationLog", "NotificationType", "iso"]

NotificationType = Literal[
    "NewMessage", "RefusedMessage", "MessageSentStateUpdated", "MessageApprecInfoUpdated", "MessageDeliveryStateUpdated"
]


def iso(ts: float) -> str:
    """A UNIX time as the API writes times: ISO 8601 with the UTC offset."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True)
class Notification:
    notification_id: str
    type: NotificationType
    related_message_id: str
    receiver: str
    triggered_by: str | None
    description: str | None
    created_at: float
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {
            "notificationId": self.notification_id,
            "relatedMessageId": self.related_message_id,
            "type": self.type,
            "notificationReceiverHerId": int(self.receiver),
            "notificationTriggeredByHerId": int(self.triggered_by) if self.triggered_by else None,
            "description": self.description,
            "createdAt": iso(self.created_at),
            "offset": self.offset,
        }


class NotificationLog:
    """The global notification log: offsets grow with gaps (other parties' notifications live between
    ours at NHN), readers filter by receiver HER-id and resume *after* an offset they processed."""

    _GAPS = (1, 3, 2, 7, 1, 4)  # deterministic, so a test can tell a gap from a lost notification

    def __init__(self, clock: Clock, *, first_offset: int = 1000) -> None:
        self._clock = clock
        self._entries: list[Notification] = []
        self._offsets: list[int] = []
        self._next = first_offset
        self._gaps = itertools.cycle(self._GAPS)
        self._changed = asyncio.Event()
        self.closed = False
        #: asked once per notification whether to write it twice (the ``duplicate`` fault)
        self.duplicate: Callable[[], bool] = lambda: False

    def append(
        self,
        type_: NotificationType,
        message_id: str,
        receiver: str,
        triggered_by: str | None,
        description: str | None = None,
    ) -> Notification:
        note = Notification(
            str(uuid.uuid4()), type_, message_id, receiver, triggered_by, description, self._clock.now(), self._take()
        )
        self._add(note)
        if self.duplicate():
            self._add(dataclasses.replace(note, offset=self._take()))
        self._changed.set()
        self._changed = asyncio.Event()
        return note

    def _take(self) -> int:
        offset = self._next
        self._next += next(self._gaps)
        return offset

    def _add(self, note: Notification) -> None:
        self._entries.append(note)
        self._offsets.append(note.offset)

    @property
    def tail(self) -> int:
        """The last offset written (0 before the first): where a stream without ``Offset`` starts."""
        return self._offsets[-1] if self._offsets else 0

    def read(self, her_ids: frozenset[str], after: int, limit: int) -> tuple[list[Notification], int]:
        """Up to ``limit`` notifications for ``her_ids`` with an offset above ``after``, and the offset to
        read after next time (past the other parties' notifications that were skipped)."""
        found: list[Notification] = []
        cursor = after
        for note in self._entries[bisect.bisect_right(self._offsets, after) :]:
            if len(found) == limit:
                break
            cursor = note.offset
            if note.receiver in her_ids:
                found.append(note)
        return found, cursor

    async def wait(self, after: int, idle: float) -> None:
        """Return when something is written after ``after``, the log closes, or ``idle`` seconds pass."""
        if self.closed or self.tail > after:
            return
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), idle)

    def close(self) -> None:
        """End every waiting reader (the server is shutting down)."""
        self.closed = True
        self._changed.set()

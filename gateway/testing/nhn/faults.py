"""Fault injection for the simulated NHN: what a client must survive, switched on by a test or the config.

Every knob is counted ("the next N requests"), so a test says exactly how much trouble it wants and the
simulator answers normally again afterwards:

* ``fail(503, times=2, path="/messages*")``: the next N matching requests answer that status (5xx) with
  the version's error body;
* ``rate_limit(retry_after=2)``: 429 with ``Retry-After`` (seconds);
* ``slow(delay)``: the answer is held back ``delay`` seconds - or until :meth:`Faults.release` lets every
  held answer go, so a test can prove a client's timeout without waiting for the delay;
* ``expire_token()``: 401 with ``WWW-Authenticate: DPoP error="invalid_token"`` as a resource server says
  it of an access token whose ``exp`` has passed (the token side of it, short-lived tokens, belongs to the
  fake HelseID);
* ``drop_stream(after_events)``: the next SSE connection is cut (no clean end of the chunked body) after N
  ``notification`` events;
* ``duplicate_notifications(n)``: the next N notifications go into the log twice, the same
  ``notificationId`` at two offsets, as an at-least-once log redelivers.

Request faults apply before anything else, as a proxy or rate limiter in front of NHN would answer. Paths
match as shell patterns (``fnmatch``), case-insensitively, against the request path without the query.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["FAULT_KINDS", "Fault", "Faults"]

RequestFaultKind = Literal["status", "rate_limit", "slow", "token_expired"]
FAULT_KINDS = ("status", "rate_limit", "slow", "token_expired", "drop_stream", "duplicate")


@dataclass
class Fault:
    """One armed request fault and how many more requests it takes."""

    kind: RequestFaultKind
    remaining: int
    path: str = "*"
    method: str | None = None
    status: int = 500
    retry_after: int = 1
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return fnmatch.fnmatchcase(path.lower(), self.path.lower())


class Faults:
    """The armed faults of one simulator. ``applied`` lists what was done, for tests to assert on."""

    def __init__(self) -> None:
        self._requests: list[Fault] = []
        self._stream_drops: list[int] = []
        self._duplicates = 0
        self._release = asyncio.Event()
        self._holding = asyncio.Event()
        self.held = 0
        self.applied: list[str] = []

    # --- arming ----------------------------------------------------------------------------------------

    def fail(self, status: int = 500, *, times: int = 1, path: str = "*", method: str | None = None) -> None:
        """The next ``times`` matching requests answer ``status`` (a 5xx, or any status a test needs)."""
        self._arm(Fault("status", times, path, method, status=status))

    def rate_limit(self, *, retry_after: int = 1, times: int = 1, path: str = "*", method: str | None = None) -> None:
        """The next ``times`` matching requests answer 429 with ``Retry-After: retry_after``."""
        self._arm(Fault("rate_limit", times, path, method, status=429, retry_after=retry_after))

    def slow(self, delay: float, *, times: int = 1, path: str = "*", method: str | None = None) -> None:
        """The next ``times`` matching answers are held ``delay`` seconds (or until :meth:`release`)."""
        self._arm(Fault("slow", times, path, method, delay=delay))

    def expire_token(self, *, times: int = 1, path: str = "*", method: str | None = None) -> None:
        """The next ``times`` matching requests are refused 401: the access token has expired."""
        self._arm(Fault("token_expired", times, path, method, status=401))

    def drop_stream(self, after_events: int, *, times: int = 1) -> None:
        """The next ``times`` SSE connections are cut after ``after_events`` notification events."""
        if after_events < 0 or times < 1:
            raise ValueError("drop_stream needs after_events >= 0 and times >= 1")
        self._stream_drops.extend([after_events] * times)

    def duplicate_notifications(self, count: int = 1) -> None:
        """The next ``count`` notifications are written to the log twice."""
        if count < 1:
            raise ValueError("duplicate_notifications needs count >= 1")
        self._duplicates += count

    def clear(self) -> None:
        """Disarm everything and let every held answer go."""
        self._requests.clear()
        self._stream_drops.clear()
        self._duplicates = 0
        self.release()

    def release(self) -> None:
        """Let every answer a ``slow`` fault holds go now (and those held later: re-arm to hold again)."""
        self._release.set()

    def arm(self, spec: Mapping[str, Any]) -> None:
        """Arm one fault from its config/JSON form: ``{kind, times?, path?, method?, status?, retry_after?,
        delay_seconds?, after_events?, count?}``. Raises ``ValueError`` for a spec that does not fit."""
        kind = spec.get("kind")
        times = int(spec.get("times", 1))
        path = str(spec.get("path", "*"))
        method = spec.get("method")
        method = str(method) if method is not None else None
        if kind == "status":
            self.fail(int(spec.get("status", 500)), times=times, path=path, method=method)
        elif kind == "rate_limit":
            self.rate_limit(retry_after=int(spec.get("retry_after", 1)), times=times, path=path, method=method)
        elif kind == "slow":
            self.slow(float(spec.get("delay_seconds", 1.0)), times=times, path=path, method=method)
        elif kind == "token_expired":
            self.expire_token(times=times, path=path, method=method)
        elif kind == "drop_stream":
            self.drop_stream(int(spec.get("after_events", 0)), times=times)
        elif kind == "duplicate":
            self.duplicate_notifications(int(spec.get("count", times)))
        else:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")

    def _arm(self, fault: Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("a fault needs times >= 1")
        if fault.kind == "slow" and self._release.is_set():  # released before: hold again from now on
            self._release = asyncio.Event()
        self._requests.append(fault)

    # --- taking (the simulator's side) -------------------------------------------------------------------

    def take_request_fault(self, method: str, path: str) -> Fault | None:
        """The first armed request fault matching this request, counted down; None when there is none."""
        for fault in self._requests:
            if fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._requests.remove(fault)
                self.applied.append(f"{fault.kind}:{method.upper()} {path}")
                return fault
        return None

    async def hold(self, delay: float) -> None:
        """Wait ``delay`` seconds or until :meth:`release`, whichever comes first."""
        self.held += 1
        self._holding.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), timeout=delay)
        finally:
            self.held -= 1
            if self.held == 0:
                self._holding.clear()

    async def holding(self) -> None:
        """Return once an answer is being held (a test's cue that the client is waiting)."""
        await self._holding.wait()

    def take_stream_drop(self) -> int | None:
        """How many notification events the SSE connection now opening may send before it is cut."""
        if not self._stream_drops:
            return None
        after = self._stream_drops.pop(0)
        self.applied.append(f"drop_stream:{after}")
        return after

    def take_duplicate(self) -> bool:
        """Whether the notification now being written goes into the log twice."""
        if self._duplicates == 0:
            return False
        self._duplicates -= 1
        self.applied.append("duplicate")
        return True

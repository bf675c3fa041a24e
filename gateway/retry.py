"""The retry policy: capped exponential backoff with full jitter, a maximum number of attempts and a time
to live (default 4 days, as NHN's asynchronous queues), globally and per route (a receiver HER-id).

Attempt n waits a random time between ``floor`` and ``min(cap, base * factor ** (n - 1))`` (full jitter,
AWS Architecture Blog "Exponential Backoff And Jitter"), so a peer coming back is not met by every sender
at once; the floor (a tenth of ``base``) keeps an unlucky draw from turning into a hot loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from gateway.config import RetrySettings

__all__ = ["RetryPolicy", "policy_for", "ttls"]


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 5.0
    factor: float = 2.0
    cap_s: float = 3600.0
    max_attempts: int = 60
    ttl_s: float = 96 * 3600.0
    ordered: bool = True
    concurrency: int = 4
    abandoned: Literal["dead", "retry"] = "dead"

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.cap_s, self.base_s * self.factor ** max(attempt - 1, 0))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = self.ceiling(attempt)
        floor = min(self.base_s / 10, ceiling)
        return (rng or random).uniform(floor, ceiling)

    def next_attempt_at(
        self,
        *,
        attempt: int,
        now: float,
        expires_at: float | None,
        rng: random.Random | None = None,
        not_before_s: float | None = None,
    ) -> float | None:
        """When to try again after failed attempt ``attempt`` - no sooner than ``not_before_s`` from now when
        the peer said so (``Retry-After``); None when attempts or time to live are spent."""
        if attempt >= self.max_attempts:
            return None
        when = now + max(self.delay(attempt, rng), not_before_s or 0.0)
        if expires_at is not None and when > expires_at:
            return None
        return when


def policy_for(settings: RetrySettings, route: str) -> RetryPolicy:
    """The global policy with the route's overrides applied."""
    own = settings.routes.get(route)

    def pick(name: str, default: float | int | bool) -> float | int | bool:
        value = getattr(own, name, None) if own is not None else None
        return default if value is None else value

    return RetryPolicy(
        base_s=float(pick("base_s", settings.base_s)),
        factor=float(pick("factor", settings.factor)),
        cap_s=float(pick("cap_s", settings.cap_s)),
        max_attempts=int(pick("max_attempts", settings.max_attempts)),
        ttl_s=float(pick("ttl_h", settings.ttl_h)) * 3600,
        ordered=bool(pick("ordered", settings.ordered)),
        concurrency=int(pick("concurrency", settings.route_concurrency)),
        abandoned=own.abandoned if own is not None and own.abandoned is not None else settings.abandoned,
    )


def ttls(settings: RetrySettings) -> dict[str, float]:
    """The time to live of each route with its own, and of every other route ("*"), in seconds."""
    found = {route: policy_for(settings, route).ttl_s for route in settings.routes}
    found["*"] = settings.ttl_h * 3600
    return found

"""Who a request to the simulated MSH API acts as, and the interface that decides it.

The MSH API simulator asks an :data:`Authorizer` on every request and gets a :class:`Principal` back: the
HelseID client and the HER-ids it may act for (from the token's ``herid`` claim). A refusal is not a
return value: the authorizer raises an ``aiohttp.web.HTTPException`` (401 with ``WWW-Authenticate`` and a
problem body) that aiohttp sends as it is, so every API handler is checked the same way and none can
forget to look at the answer. Mapping HER-ids to 403 ``Not authorized for HerId(s): …`` stays with the API,
which knows which HER-ids a request touches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

__all__ = ["Authorizer", "Principal"]


@dataclass(frozen=True)
class Principal:
    """A HelseID client and the HER-ids it may act for; ``her_ids`` None means every HER-id (the
    ``herid`` claim ``0``: all HER-ids of the delegating organisation)."""

    client_id: str
    her_ids: frozenset[str] | None

    def may_act_for(self, her_id: str) -> bool:
        return self.her_ids is None or her_id in self.her_ids

    def not_allowed(self, her_ids: Iterable[str]) -> list[str]:
        """The HER-ids of ``her_ids`` this principal may not act for, in the order given (for the 403)."""
        return [h for h in her_ids if not self.may_act_for(h)]


#: Checks a request's credentials; returns who it acts as, or raises ``web.HTTPException`` (a 401).
Authorizer = Callable[[web.Request], Awaitable[Principal]]

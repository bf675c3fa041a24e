"""Which queues and certificates to use towards a party on the Tjenestebuss: one :class:`Channel` per pair
of HER-ids, found in Helsenorge.Messaging's order (``CollaborationProtocolRegistryRest`` and
``DummyCollaborationProtocolProfileFactory``):

1. the **CPA** between the two parties (``cppa.agreement``) - its ``cpaid`` goes into the AMQP message;
2. else the counterparty's **CPP** (``cppa.profile``);
3. else the counterparty's certificates from the **Adresseregister** (``cppa.fallback_register``), with the
   default queues ``<her>_async``, ``<her>_sync`` and ``<her>_error``.

A step the service cannot answer now (:class:`~adapters.cppa.client.CppaUnavailable`, logged as
``cppa.unreachable``) or answers with a document that cannot be used (``cppa.document_invalid``) is passed
over: the next step decides, and nothing crashes. Only the register step's own failure reaches the caller.

A result is kept per pair for ``cache_s`` (a result found around an outage for ``outage_cache_s``, so the
service is asked again soon but not for every message) and reused only while its certificates are valid
by the injected clock; concurrent resolves of one pair share one lookup. Log lines carry HER-ids, the
cpa id and codes - never a document, a name or a certificate.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from adapters.cppa.client import CppaUnavailable
from adapters.cppa.documents import Agreement, CppaDocumentError, Party, Profile, Queues
from gateway.clock import Clock, SystemClock
from gateway.log import get_logger
from gateway.security.certs import CertRef

__all__ = ["Channel", "ChannelResolver", "CppaLookup", "RegisterCertificates", "RegisterLookup", "Source"]

log = get_logger(__name__)

Source = Literal["cpa", "cpp", "register"]
_T = TypeVar("_T")


class CppaLookup(Protocol):
    """What the resolver asks of the CPPA service (:class:`~adapters.cppa.client.CppaClient`)."""

    async def agreement(self, my_her_id: str, counterparty_her_id: str) -> Agreement | None: ...

    async def profile(self, her_id: str) -> Profile | None: ...


@dataclass(frozen=True)
class RegisterCertificates:
    """A party's certificates as the Adresseregister gives them."""

    signing: CertRef | None
    encryption: CertRef | None


#: the counterparty's certificates from the Adresseregister, or None when the register has none
RegisterLookup = Callable[[str], Awaitable[RegisterCertificates | None]]


@dataclass(frozen=True)
class Channel:
    """How to reach ``her_id`` from ``my_her_id``: its queues, its certificates (None where no source has
    one), the CPA's id (None unless the channel comes from a CPA) and the actions (8279 Types) the CPA lets
    ``her_id`` send, and the processes it sends in (None: no CPA, or one that lists none - nothing to hold
    a message to)."""

    my_her_id: str
    her_id: str
    cpa_id: str | None
    queues: Queues
    signing: CertRef | None = field(repr=False)
    encryption: CertRef | None = field(repr=False)
    source: Source
    sends: frozenset[str] | None = field(default=None, repr=False)

    def agrees_to(self, action: str) -> bool:
        """Whether ``her_id`` may send us a message of ``action`` (the AMQP subject) under this channel:
        always, unless a CPA lists what it sends and ``action`` is none of its actions or processes
        (compared without case)."""
        return self.sends is None or action.upper() in self.sends

    def certificates_valid(self, now: float) -> bool:
        """Whether every certificate the channel has is within its validity period at ``now`` (UNIX s)."""
        return all(
            ref.not_before.timestamp() <= now <= ref.not_after.timestamp()
            for ref in (self.signing, self.encryption)
            if ref is not None
        )


@dataclass(frozen=True)
class _Cached:
    channel: Channel
    expires: float


class ChannelResolver:
    """Resolves and caches channels. ``cppa`` may be None (no CPPA service configured): register only."""

    def __init__(
        self,
        cppa: CppaLookup | None,
        register: RegisterLookup,
        *,
        cache_s: float = 300.0,
        outage_cache_s: float = 30.0,
        clock: Clock | None = None,
        max_entries: int = 10_000,
    ) -> None:
        self._cppa = cppa
        self._register = register
        self._cache_s = cache_s
        self._outage_cache_s = min(outage_cache_s, cache_s)
        self._clock: Clock = clock or SystemClock()
        self._max_entries = max(1, max_entries)
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[Channel]] = {}

    async def resolve(self, my_her_id: str, other_her_id: str) -> Channel:
        """The channel from ``my_her_id`` to ``other_her_id``: cached, or looked up CPA -> CPP -> register."""
        key = (my_her_id, other_her_id)
        cached = self._cache.get(key)
        now = self._clock.now()
        if cached is not None and now < cached.expires:
            return cached.channel
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh(my_her_id, other_her_id))
            self._pending[key] = pending
            pending.add_done_callback(functools.partial(self._settled, key))
        # shielded: one caller giving up does not cancel the lookup the others wait for
        return await asyncio.shield(pending)

    def forget(self, my_her_id: str, other_her_id: str) -> None:
        """Drop the pair's cached channel (a peer reported our certificate choice wrong, say)."""
        self._cache.pop((my_her_id, other_her_id), None)

    def _settled(self, key: tuple[str, str], future: asyncio.Future[Channel]) -> None:
        if self._pending.get(key) is future:
            del self._pending[key]
        if not future.cancelled():
            future.exception()  # retrieved: when every waiter has gone, asyncio need not complain

    async def _refresh(self, my_her_id: str, other_her_id: str) -> Channel:
        channel, outage = await self._lookup(my_her_id, other_her_id)
        now = self._clock.now()
        # kept while its certificates are valid; one found around an outage, or with a certificate out of its
        # validity (looked up again soon, not for every message), for the short time
        lifetime = self._outage_cache_s if outage or not channel.certificates_valid(now) else self._cache_s
        expiry = min((ref.not_after.timestamp() for ref in (channel.signing, channel.encryption) if ref), default=None)
        expires = now + lifetime if expiry is None or expiry <= now else min(now + lifetime, expiry)
        key = (my_her_id, other_her_id)
        self._cache.pop(key, None)
        while len(self._cache) >= self._max_entries:  # bounded; the oldest entry goes
            del self._cache[next(iter(self._cache))]
        self._cache[key] = _Cached(channel, expires)
        return channel

    async def _lookup(self, my_her_id: str, other_her_id: str) -> tuple[Channel, bool]:
        """The channel, and whether a step was passed over because the service failed."""
        ids = {"my_her_id": my_her_id, "her_id": other_her_id}
        failed = False
        if self._cppa is not None:
            agreement, failed = await self._step("agreement", self._cppa.agreement(my_her_id, other_her_id), ids)
            party = agreement.counterparty(my_her_id) if agreement is not None else None
            if agreement is not None and party is not None:
                log.info("cppa.agreement", cpa_id=agreement.cpa_id, **ids, **_having(party.signing, party.encryption))
                return _from_party(my_her_id, other_her_id, party, "cpa", agreement.cpa_id), failed
            profile, profile_failed = await self._step("profile", self._cppa.profile(other_her_id), ids)
            failed = failed or profile_failed
            if profile is not None:
                party = profile.party
                log.info("cppa.profile", **ids, **_having(party.signing, party.encryption))
                return _from_party(my_her_id, other_her_id, party, "cpp", None), failed
        certificates = await self._register(other_her_id)
        signing = certificates.signing if certificates is not None else None
        encryption = certificates.encryption if certificates is not None else None
        reason = "no_cppa_service" if self._cppa is None else "cppa_unavailable" if failed else "no_cpa_or_cpp"
        log.info(
            "cppa.fallback_register",
            reason=reason,
            registered=certificates is not None,
            **ids,
            **_having(signing, encryption),
        )
        queues = Queues.defaults(other_her_id)
        return Channel(my_her_id, other_her_id, None, queues, signing, encryption, "register"), failed

    async def _step(self, step: str, call: Awaitable[_T | None], ids: dict[str, str]) -> tuple[_T | None, bool]:
        """One call to the service: its answer, or None and whether the service failed (logged)."""
        try:
            return await call, False
        except CppaUnavailable as exc:
            log.warning(
                "cppa.unreachable", step=step, code=exc.event, error=exc.message, retry_after_s=exc.retry_after_s, **ids
            )
            return None, True
        except CppaDocumentError as exc:
            log.error("cppa.document_invalid", step=step, code=exc.event, error=exc.message, **ids)
            return None, False
        except Exception:  # a document no rule foresaw: passed over like an invalid one, never a stuck party
            log.exception("cppa.document_invalid", step=step, code="cppa.document_invalid", **ids)
            return None, False


def _from_party(my_her_id: str, her_id: str, party: Party, source: Source, cpa_id: str | None) -> Channel:
    """The channel to ``her_id`` - as asked, not as the document spells it (``093238`` is ``93238``)."""
    # the actions it sends, and the processes it sends in (Helsenorge.Messaging finds a message by either)
    sends = frozenset(name.upper() for role in party.roles if role.sends for name in (*role.sends, role.process))
    return Channel(
        my_her_id=my_her_id,
        her_id=her_id,
        cpa_id=cpa_id,
        queues=party.queues.or_defaults(her_id),
        signing=party.signing,
        encryption=party.encryption,
        source=source,
        sends=sends if source == "cpa" and sends else None,
    )


def _having(signing: CertRef | None, encryption: CertRef | None) -> dict[str, bool]:
    """Which certificates a source had - said as yes or no, never the certificate."""
    return {"signing_certificate": signing is not None, "encryption_certificate": encryption is not None}

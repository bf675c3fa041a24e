"""Where a party on the bus is reached from one of ours: its queues and the CPA id of our agreement with it,
from NHN's CPPA service when ``cppa_url`` is set (adapters/cppa/, docs/cppa.md: CPA -> CPP -> register,
each step logged, cached), else the queues every party has (``<her>_async``, ``_sync``, ``_error``).

The register step has no certificates to add here: the CMS layer uses the region file's (or the dev PKI's)
for every party, so a channel found that way carries only the default queues.
"""

from __future__ import annotations

import aiohttp

from adapters.amqp.settings import AmqpSettings
from adapters.cppa.client import CppaClient
from adapters.cppa.documents import Queues
from adapters.cppa.resolver import Channel, ChannelResolver, RegisterCertificates

__all__ = ["Channels"]


async def _region_file_certificates(_her_id: str) -> RegisterCertificates | None:
    return None  # the CMS layer's own (docs/security.md); nothing for the channel to carry


class Channels:
    def __init__(self, settings: AmqpSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._resolver: ChannelResolver | None = None

    async def of(self, my_her_id: str, other_her_id: str) -> Channel:
        if self.settings.cppa_url is None:
            return Channel(my_her_id, other_her_id, None, Queues.defaults(other_her_id), None, None, "register")
        return await self._lookup().resolve(my_her_id, other_her_id)

    def _lookup(self) -> ChannelResolver:
        if self._resolver is None:
            assert self.settings.cppa_url is not None
            self._session = aiohttp.ClientSession()
            client = CppaClient(self.settings.cppa_url, session=self._session, timeout_s=self.settings.cppa_timeout_s)
            self._resolver = ChannelResolver(
                client,
                _region_file_certificates,
                cache_s=self.settings.cppa_cache_s,
                outage_cache_s=self.settings.cppa_outage_cache_s,
            )
        return self._resolver

    def forget(self, my_her_id: str, other_her_id: str) -> None:
        """Look the pair up afresh next time (a peer reported our certificate choice wrong, say)."""
        if self._resolver is not None:
            self._resolver.forget(my_her_id, other_her_id)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._resolver = None

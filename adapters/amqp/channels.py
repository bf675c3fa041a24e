"""Where a party on the bus is reached from one of ours: its queues and the CPA id of our agreement with it,
from NHN's CPPA service when ``cppa_url`` is set (adapters/cppa/, docs/cppa.md: CPA -> CPP -> register,
each step logged, cached), else the queues every party has (``<her>_async``, ``_sync``, ``_error``).

A CPP/CPA's certificates are handed to the gateway's CMS (``context.certificates``, :meth:`KeyStore.learn`)
each time a channel is looked up, so a party the region file pins no certificate for is signed to,
encrypted to and verified with the certificates of its CPA (or CPP); a pinned one still wins. The register
step has no certificates to add: the CMS layer already holds the region file's (or the dev PKI's).

With ``helseid_url``, ``client_id`` and ``key_file`` set, the service is asked with HelseID's DPoP-bound token
(scope ``nhn:cppa/access-with-dpop``, NHN's ``/v2/`` variant); the key is read when the transport is made.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from adapters.amqp.settings import AmqpSettings
from adapters.cppa.client import SCOPE, CppaClient
from adapters.cppa.documents import Queues
from adapters.cppa.resolver import Channel, ChannelResolver, RegisterCertificates
from adapters.helseid.client import HelseIdClient
from adapters.helseid.dpop import SigningKey
from gateway.transport import CertificateBook

__all__ = ["Channels"]


async def _region_file_certificates(_her_id: str) -> RegisterCertificates | None:
    return None  # the CMS layer's own (docs/security.md); nothing for the channel to carry


class Channels:
    def __init__(
        self, settings: AmqpSettings, certificates: CertificateBook | None = None, *, data_dir: str = ""
    ) -> None:
        self.settings = settings
        self.certificates = certificates
        self._session: aiohttp.ClientSession | None = None
        self._resolver: ChannelResolver | None = None
        # read now: a key that will not load stops the start, not the first lookup
        self._key = SigningKey.from_file(Path(data_dir) / settings.key_file) if settings.key_file else None

    async def of(self, my_her_id: str, other_her_id: str) -> Channel:
        """The channel from one of ours to ``other_her_id``; its certificates, if any, go to the CMS."""
        if self.settings.cppa_url is None:
            return Channel(my_her_id, other_her_id, None, Queues.defaults(other_her_id), None, None, "register")
        channel = await self._lookup().resolve(my_her_id, other_her_id)
        if self.certificates is not None and (channel.signing or channel.encryption):
            self.certificates.learn(other_her_id, signing=channel.signing, encryption=channel.encryption)
        return channel

    def _lookup(self) -> ChannelResolver:
        if self._resolver is None:
            assert self.settings.cppa_url is not None
            self._session = aiohttp.ClientSession()
            helseid = None
            if self._key is not None and self.settings.helseid_url and self.settings.client_id:
                helseid = HelseIdClient(
                    self.settings.helseid_url, self.settings.client_id, self._key, session=self._session, scope=SCOPE
                )
            client = CppaClient(
                self.settings.cppa_url, session=self._session, auth=helseid, timeout_s=self.settings.cppa_timeout_s
            )
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

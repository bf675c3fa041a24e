"""The CPPA REST client: a party's CPP and the CPA between two parties, from NHN's CPPA service.

Two calls, as Helsenorge.Messaging makes them (``CollaborationProtocolRegistryRest``), each with
``Accept: application/xml`` and, when an ``auth`` is given, its headers - HelseID's DPoP-bound token and a
fresh proof (``adapters/helseid``, scope ``nhn:cppa/access-with-dpop``, NHN's ``/v2/`` variant of the
service). A 401 asking for a DPoP nonce is answered with one, any other 401 with a new token; then the call
is made once more:

* ``GET {base}Profiles/{herId}`` - the party's CPP;
* ``GET {base}Agreements/HerIds/{myHerId}/{counterpartyHerId}`` - the CPA between the two.

Answers: 200 with the document (read within ``max_bytes`` and the timeout, parsed by documents.py, and
checked to be about the HER-ids asked for); 404, or the service's empty ``xsi:nil`` placeholder, is "none"
(None). Every other answer - 401/403 included, redirects not followed - and every network failure or
timeout is a :class:`CppaUnavailable`, a retryable :class:`~gateway.errors.TransportError` carrying the
service's ``Retry-After``; a document that cannot be used is a
:class:`~adapters.cppa.documents.CppaDocumentError`. The rules for which HTTP statuses are temporary and
how ``Retry-After`` reads are the gateway's own (gateway/transport.py). A token is never in an error or
a ``repr``; this module logs nothing (the resolver does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Protocol

import aiohttp
from yarl import URL

from adapters.bodies import read_body
from adapters.cppa.documents import (
    MAX_DOCUMENT_BYTES,
    Agreement,
    CppaDocumentError,
    CppaNoDocument,
    Profile,
    parse_agreement,
    parse_profile,
)
from gateway.errors import ConfigError, GatewayError, TransportError
from gateway.registry import is_her_id
from gateway.transport import retry_after, retryable_status

__all__ = [
    "NHN_PROD_URL",
    "NHN_TEST_URL",
    "SCOPE",
    "CppaAccessRefused",
    "CppaClient",
    "CppaUnavailable",
    "ServiceAuth",
    "cppa_base_url",
]

NHN_TEST_URL: Final = "https://cppa.test.grunndata.nhn.no/"
NHN_PROD_URL: Final = "https://cppa.grunndata.nhn.no/"
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
#: the HelseID scope of the DPoP variant (``{NHN_TEST_URL}v2/``)
SCOPE: Final = "nhn:cppa/access-with-dpop"

class ServiceAuth(Protocol):
    """What authorises each call (:class:`~adapters.helseid.client.HelseIdClient`)."""

    async def headers(self, method: str, url: str) -> dict[str, str]: ...

    def refused(self, url: str, status: int, headers: Mapping[str, str], authorization: str) -> None: ...


class CppaUnavailable(TransportError):
    """The CPPA service did not give an answer this time: no connection, a timeout, or an HTTP status other
    than 200 and 404. Retryable; the resolver goes on to the next source. Not the receiver's fault, so no
    receiver's circuit breaker counts it."""

    event = "cppa.unavailable"
    route_failure = False


class CppaAccessRefused(CppaUnavailable):
    """The CPPA service refused this gateway's token (HTTP 401/403), or no token could be had: an operator's
    fix (HelseID client, scope ``nhn:cppa/access-with-dpop``). Retryable like every CPPA failure."""

    event = "cppa.refused"


def cppa_base_url(base_url: str) -> URL:
    """The service's base URL, checked (an https URL - plain http only on loopback, for tests and local runs:
    the certificates it gives are trusted for whole parties - without credentials, query or fragment) and
    ending in ``/`` - the paths are relative to it, as NHN documents it (``https://cppa.grunndata.nhn.no/v2/``).
    A wrong one is a :class:`ConfigError` (the settings check it at start)."""
    base = URL(base_url)
    if base.scheme not in ("http", "https") or not base.host:
        raise ConfigError(f"The CPPA URL must be an https URL, e.g. {NHN_TEST_URL}v2/.")
    if base.scheme == "http" and base.host not in _LOOPBACK:
        raise ConfigError("The CPPA URL must be https: its certificates are trusted for whole parties.")
    if base.user is not None or base.password is not None:
        raise ConfigError("The CPPA URL carries credentials; the service takes a bearer token instead.")
    if base.query_string or base.fragment:
        raise ConfigError("The CPPA URL cannot carry a query or a fragment.")
    return base if base.path.endswith("/") else base.with_path(base.path + "/")


class CppaClient:
    """``Profiles`` and ``Agreements/HerIds`` of one CPPA service; the caller owns ``session``."""

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession,
        auth: ServiceAuth | None = None,
        timeout_s: float = 10.0,
        max_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> None:
        self._base = cppa_base_url(base_url)
        self._session = session
        self._auth = auth
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"CppaClient({str(self._base)!r})"

    @property
    def base_url(self) -> str:
        return str(self._base)

    async def profile(self, her_id: str) -> Profile | None:
        """The CPP of ``her_id``, or None when the service has none."""
        _check_her_id(her_id)
        body = await self._get(f"Profiles/{her_id}", f"the CPP of HER-id {her_id}")
        if body is None:
            return None
        try:
            profile = parse_profile(body, max_bytes=self._max_bytes)
        except CppaNoDocument:
            return None
        if int(profile.party.her_id) != int(her_id):
            raise CppaDocumentError(
                f"Asked for the CPP of HER-id {her_id}, the service answered one for {profile.party.her_id}."
            )
        return profile

    async def agreement(self, my_her_id: str, counterparty_her_id: str) -> Agreement | None:
        """The CPA between ``my_her_id`` and ``counterparty_her_id``, or None when they have none."""
        _check_her_id(my_her_id)
        _check_her_id(counterparty_her_id)
        what = f"the CPA of HER-ids {my_her_id} and {counterparty_her_id}"
        body = await self._get(f"Agreements/HerIds/{my_her_id}/{counterparty_her_id}", what)
        if body is None:
            return None
        try:
            agreement = parse_agreement(body, max_bytes=self._max_bytes)
        except CppaNoDocument:
            return None
        if agreement.party(my_her_id) is None or agreement.party(counterparty_her_id) is None:
            found = " and ".join(party.her_id for party in agreement.parties)
            raise CppaDocumentError(f"Asked for {what}, the service answered CPA {agreement.cpa_id} between {found}.")
        return agreement

    async def _get(self, path: str, what: str) -> bytes | None:
        url = str(self._base.join(URL(path)))
        for attempt in range(2):
            headers = {"Accept": "application/xml", **await self._authorisation(url)}
            try:
                async with self._session.get(
                    url, headers=headers, timeout=self._timeout, allow_redirects=False, raise_for_status=False
                ) as resp:
                    if resp.status == 401 and attempt == 0 and self._auth is not None:
                        self._auth.refused(url, resp.status, resp.headers, headers.get("Authorization", ""))
                        continue
                    if resp.status == 404:
                        return None
                    if resp.status != 200:
                        raise _refusal(resp.status, resp.headers.get("Retry-After"), what, str(self._base))
                    if (resp.content_length or 0) > self._max_bytes:
                        raise CppaDocumentError(
                            f"{_capital(what)} is {resp.content_length} bytes, over {self._max_bytes}."
                        )
                    body = await read_body(resp.content, self._max_bytes)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                said = f"{type(exc).__name__}: {exc}".rstrip(": ")
                raise CppaUnavailable(f"The CPPA service at {self._base} did not answer for {what}: {said}") from exc
            if body is None:
                raise CppaDocumentError(f"{_capital(what)} is over {self._max_bytes} bytes; it was not read.")
            return body
        raise AssertionError("unreachable: the second attempt returns or raises")  # pragma: no cover

    async def _authorisation(self, url: str) -> dict[str, str]:
        if self._auth is None:
            return {}
        try:
            return await self._auth.headers("GET", url)
        except GatewayError as exc:  # HelseID away or refusing the client: the service cannot be asked now
            wait = getattr(exc, "retry_after_s", None)
            raise CppaAccessRefused(f"No access token for the CPPA service: {exc.message}", retry_after_s=wait) from exc


def _refusal(status: int, retry_after_header: str | None, what: str, where: str) -> CppaUnavailable:
    wait = retry_after(retry_after_header)
    if status in (401, 403):
        return CppaAccessRefused(
            f"The CPPA service at {where} refused this gateway's access (HTTP {status}) for {what}; "
            f"check the HelseID client and its scope {SCOPE}.",
            retry_after_s=wait,
        )
    kind = "a temporary failure" if retryable_status(status) else "an unexpected answer"
    return CppaUnavailable(
        f"The CPPA service at {where} answered HTTP {status} ({kind}) for {what}.", retry_after_s=wait
    )


def _check_her_id(her_id: str) -> None:
    if not isinstance(her_id, str) or not is_her_id(her_id):
        raise ConfigError(f"{str(her_id)[:40]!r} is not a HER-id (1 to 12 digits).")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]

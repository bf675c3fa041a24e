"""The HelseID client: DPoP-bound access tokens, and the headers of each API call.

Client credentials with a ``private_key_jwt`` client assertion and DPoP (RFC 9449), as NHN's
Meldingstjener (docs/edi2.md) and CPPA service (docs/cppa.md) demand:

- the token endpoint comes from OpenID discovery (``<issuer>/.well-known/openid-configuration``), read
  once; the document must name the issuer we were configured with;
- a token request carries a fresh client assertion and a proof for ``POST <token endpoint>``. HelseID
  answers the first one with 400 ``use_dpop_nonce`` and a ``DPoP-Nonce``: the request is made once more
  with that nonce in the proof *and a new assertion* - the first one's ``jti`` is used up, although it only
  earned the nonce. The latest nonce is kept for the next token request, which then needs one round trip;
- the token is kept until ``refresh_margin_s`` before it expires (at most half its lifetime), and callers
  that want one at the same time wait for the same request - never a burst of token requests;
- every API call gets ``Authorization: DPoP <token>`` and a new proof with ``htm``, ``htu``, ``ath`` and the
  API's own nonce when it asked for one (:func:`nonce_challenge`, :meth:`HelseIdClient.note_nonce`).

Failures become the gateway's errors: HelseID unreachable, 5xx, 408 or 429 is a
:class:`~gateway.errors.TransportError` (with ``retry_after_s`` from ``Retry-After``) - the message waits;
a refusal (``invalid_client``, ``invalid_scope``, any other 4xx, a discovery document or token answer that
cannot be used) is an :class:`~gateway.errors.AuthenticationRefused` naming the OAuth error and what to
check, since only an operator can fix the HelseID client - retried like the network's faults, so the
messages wait for the fix instead of becoming dead letters. Neither
error nor log line ever holds a token, an assertion, a proof or key material; the OAuth error code is
logged only when it looks like one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from adapters.bodies import read_body
from adapters.helseid.dpop import SigningKey, client_assertion, dpop_proof
from gateway.errors import AuthenticationRefused, TransportError
from gateway.log import get_logger
from gateway.transport import retry_after, retryable_status

__all__ = ["DEFAULT_SCOPE", "HelseIdClient", "nonce_challenge"]

log = get_logger("adapters.helseid.client")

DEFAULT_SCOPE: Final = "nhn:msh/api"
_JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_DISCOVERY: Final = "/.well-known/openid-configuration"
_MAX_BODY: Final = 256 * 1024
#: after HelseID refused the client, the token is not asked for again for this long
_REFUSED_PAUSE_S: Final = 5.0
_DEFAULT_EXPIRES_IN: Final = 60.0  # when HelseID leaves out expires_in (RFC 6749 only recommends it)
_OAUTH_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # a token goes into a header: visible ASCII, no spaces

#: What an operator should look at for each OAuth error of the token endpoint.
_HINTS: Final = {
    "invalid_client": "HelseID did not accept the client's authentication: check client_id, that key_file "
    "holds the key registered for that client, its kid, and helseid_url (the assertion's audience)",
    "unauthorized_client": "the HelseID client may not use client_credentials: check its configuration",
    "invalid_grant": "HelseID refused the grant: check the client's configuration and the Altinn delegation",
    "invalid_scope": "the HelseID client may not have the scope asked for: add it to the client",
    "unsupported_grant_type": "HelseID does not offer client_credentials to this client",
    "invalid_dpop_proof": "HelseID refused the DPoP proof: check this machine's clock and the signing algorithm",
    "invalid_request": "HelseID found the token request malformed",
}


def nonce_challenge(status: int, headers: Mapping[str, str]) -> str | None:
    """The nonce a resource server asks for (RFC 9449 §9: 401, ``WWW-Authenticate: DPoP
    error="use_dpop_nonce"`` and ``DPoP-Nonce``), or None when the answer is not that."""
    nonce = headers.get("DPoP-Nonce")
    challenge = headers.get("WWW-Authenticate", "")
    if status == 401 and nonce and challenge[:5].lower() == "dpop " and "use_dpop_nonce" in challenge:
        return nonce
    return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # when it is no longer handed out
    expires_at: float


class HelseIdClient:
    """Access tokens from HelseID for one client, and the DPoP headers of the API calls made with them.

    ``session`` is the caller's (the adapter's) aiohttp session; ``clock`` gives UNIX seconds and is read
    for every proof, assertion and expiry decision, so tests can move it.
    """

    def __init__(
        self,
        issuer: str,
        client_id: str,
        key: SigningKey,
        *,
        session: aiohttp.ClientSession,
        scope: str = DEFAULT_SCOPE,
        clock: Callable[[], float] = time.time,
        refresh_margin_s: float = 30.0,
        timeout_s: float = 30.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.scope = scope
        self._key = key
        self._session = session
        self._clock = clock
        self._margin = refresh_margin_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._endpoint: str | None = None
        self._token: _Token | None = None
        self._inflight: asyncio.Task[_Token] | None = None
        self._token_nonce: str | None = None
        self._api_nonces: dict[str, str] = {}
        self._refused: tuple[float, AuthenticationRefused] | None = None  # until when, and why

    def __repr__(self) -> str:
        return f"HelseIdClient(issuer={self.issuer!r}, client_id={self.client_id!r}, key={self._key!r})"

    # --- what the adapter calls ----------------------------------------------------------------------

    async def headers(self, method: str, url: str) -> dict[str, str]:
        """``Authorization`` and ``DPoP`` for one API call (a new proof every time)."""
        token = await self.access_token()
        nonce = self._api_nonces.get(_origin(url))
        proof = dpop_proof(self._key, method, url, nonce=nonce, access_token=token, now=self._clock())
        return {"Authorization": f"DPoP {token}", "DPoP": proof}

    def note_nonce(self, url: str, nonce: str) -> None:
        """Remember the ``DPoP-Nonce`` an API server gave (for its origin); the next proofs carry it."""
        self._api_nonces[_origin(url)] = nonce

    def refused(self, url: str, status: int, headers: Mapping[str, str], authorization: str) -> None:
        """An API answered a call 401: remember the nonce it asks for, or else forget the token it refused
        (``authorization``, the call's header) - either way the call is worth one more try, and only one."""
        nonce = nonce_challenge(status, headers)
        if nonce is not None:
            self.note_nonce(url, nonce)
        else:  # that token only: one another call got meanwhile is kept
            self.invalidate(authorization.removeprefix("DPoP "))

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (after the API answered 401), so the next call gets a new one. With
        ``token``, only if that is still the cached one: two calls refused with the same token cost one
        token request, not two."""
        if self._token is not None and (token is None or token == self._token.value):
            self._token = None

    async def access_token(self) -> str:
        """A valid access token: the cached one, or one new token request shared by every caller."""
        cached = self._token
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        if self._refused is not None and self._clock() < self._refused[0]:
            raise self._refused[1]
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight.add_done_callback(self._settled)
        # shielded: one caller giving up (cancelled) does not cancel the request the others wait for
        token = await asyncio.shield(self._inflight)
        return token.value

    async def token_endpoint(self) -> str:
        """The token endpoint from the issuer's discovery document (fetched once)."""
        if self._endpoint is None:
            url = self.issuer + _DISCOVERY
            status, body, _headers = await self._call("GET", url, what="discovery")
            if status != 200:
                raise self._failure(status, body, _headers, what="discovery", url=url)
            issuer, endpoint = body.get("issuer"), body.get("token_endpoint")
            if not isinstance(issuer, str) or issuer.rstrip("/") != self.issuer:
                raise AuthenticationRefused(
                    f"The OpenID configuration at {url} names another issuer than helseid_url {self.issuer!r}."
                )
            if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
                raise AuthenticationRefused(f"The OpenID configuration at {url} has no usable token_endpoint.")
            self._endpoint = endpoint
            log.info("helseid.discovered", issuer=self.issuer, client_id=self.client_id)
        return self._endpoint

    # --- the token request -------------------------------------------------------------------------

    def _settled(self, task: asyncio.Task[_Token]) -> None:
        self._inflight = None
        if task.cancelled():
            return
        error = task.exception()  # retrieved here too, so a failure nobody awaited is not reported as lost
        if error is None:
            self._token = task.result()
            self._refused = None
        elif isinstance(error, AuthenticationRefused):  # asked again only after a pause: HelseID is not hammered
            self._refused = (self._clock() + _REFUSED_PAUSE_S, error)

    async def _fetch(self) -> _Token:
        endpoint = await self.token_endpoint()
        for attempt in (1, 2):
            started = self._clock()
            proof = dpop_proof(self._key, "POST", endpoint, nonce=self._token_nonce, now=started)
            form = {
                "client_id": self.client_id,
                "grant_type": "client_credentials",
                "scope": self.scope,
                # a new assertion every time: the server keeps each jti it has seen, whatever it answered
                "client_assertion": client_assertion(self._key, self.client_id, self.issuer, now=started),
                "client_assertion_type": _JWT_BEARER,
            }
            status, body, headers = await self._call("POST", endpoint, what="token", form=form, dpop=proof)
            if headers.get("DPoP-Nonce"):
                self._token_nonce = headers["DPoP-Nonce"]
            if status == 400 and body.get("error") == "use_dpop_nonce" and headers.get("DPoP-Nonce") and attempt == 1:
                log.debug("helseid.nonce_required", client_id=self.client_id)
                continue
            if status == 200:
                return self._token_from(body, started)
            raise self._failure(status, body, headers, what="token", url=endpoint)
        raise AssertionError("unreachable: the second attempt returns or raises")  # pragma: no cover

    def _token_from(self, body: Mapping[str, Any], started: float) -> _Token:
        value, token_type = body.get("access_token"), body.get("token_type")
        if not isinstance(value, str) or not _TOKEN_CHARS.fullmatch(value):
            raise AuthenticationRefused("HelseID answered the token request without a usable access_token.")
        if not isinstance(token_type, str) or token_type.lower() != "dpop":
            raise AuthenticationRefused(
                f"HelseID issued a {str(token_type)[:16]!r} token, not a DPoP-bound one: "
                "the HelseID client must require DPoP."
            )
        expires_in = body.get("expires_in")
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0
            else _DEFAULT_EXPIRES_IN
        )
        margin = min(self._margin, lifetime / 2)
        log.info("helseid.token_issued", client_id=self.client_id, expires_in=int(lifetime))
        return _Token(value, started + lifetime - margin, started + lifetime)

    # --- HTTP and errors ---------------------------------------------------------------------------

    async def _call(
        self, method: str, url: str, *, what: str, form: dict[str, str] | None = None, dpop: str | None = None
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        headers = {"Accept": "application/json"}
        if dpop is not None:
            headers["DPoP"] = dpop
        try:
            async with self._session.request(
                method, url, data=form, headers=headers, allow_redirects=False, timeout=self._timeout
            ) as resp:
                raw = await read_body(resp.content, _MAX_BODY)  # over the bound: read as no answer at all
                return resp.status, _json_object(raw or b""), resp.headers
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning(
                "helseid.unreachable",
                code=TransportError.event,
                step=what,
                issuer=self.issuer,
                error=type(exc).__name__,
            )
            raise TransportError(
                f"HelseID at {self.issuer} cannot be reached ({what}): {type(exc).__name__}."
            ) from None

    def _failure(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str], *, what: str, url: str
    ) -> TransportError:
        error = body.get("error")
        code = error if isinstance(error, str) and _OAUTH_CODE.fullmatch(error) else None
        # a second use_dpop_nonce right after HelseID gave one: its nonce rotated in between - try again
        if retryable_status(status) or code == "use_dpop_nonce":
            wait = retry_after(headers.get("Retry-After"), now=self._clock())
            log.warning("helseid.unavailable", code=TransportError.event, step=what, status=status, retry_after_s=wait)
            return TransportError(
                f"HelseID answered HTTP {status} to the {what} request; trying again later.", retry_after_s=wait
            )
        # one loud line per incident (until a token is had again); the repeats are quiet
        level = log.debug if self._refused is not None else log.error
        level("helseid.refused", code=AuthenticationRefused.event, step=what, status=status, error=code)
        if 300 <= status < 400:
            return AuthenticationRefused(f"HelseID's {what} URL {url} redirects (HTTP {status}): fix helseid_url.")
        if what == "discovery":
            return AuthenticationRefused(f"No OpenID configuration at {url} (HTTP {status}): check helseid_url.")
        hint = _HINTS.get(code or "", "check the HelseID client's configuration")
        said = f" {code}" if code else ""
        return AuthenticationRefused(
            f"HelseID refused the token request of client {self.client_id!r} (HTTP {status}{said}): {hint}."
        )


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

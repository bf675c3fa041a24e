"""The fake HelseID: OpenID discovery and a token endpoint that checks what the real one checks.

A token request is ``client_credentials`` with a ``private_key_jwt`` client assertion and a DPoP proof.
In the order a real server (Duende IdentityServer, which HelseID runs) takes them:

1. the form: ``grant_type=client_credentials``, the JWT-bearer ``client_assertion_type``;
2. the client: registered, its assertion a JWS with ``typ`` ``client-authentication+jwt`` signed by the
   registered key, ``iss`` = ``sub`` = the client id, ``aud`` = the issuer, inside its ``nbf``/``exp``
   (with ``skew_s``), ``iat`` not ahead, ``exp`` at most ``max_assertion_lifetime_s`` ahead, and a ``jti``
   never seen - an assertion is used up by the request that carries it, whatever the answer
   (400 ``invalid_client``);
3. the DPoP proof (:class:`~gateway.testing.nhn.dpop_check.ProofChecker`: ``htm`` POST, ``htu`` the token
   endpoint, ``iat`` window, ``jti`` replay; 400 ``invalid_dpop_proof``) and its nonce: without the
   current one the answer is 400 ``use_dpop_nonce`` with a ``DPoP-Nonce`` header. Nonces rotate every
   ``nonce_interval_s``; the previous one is taken for ``nonce_grace_s`` more;
4. the scope: a subset of the client's (400 ``invalid_scope``); none asked for means all of them.

The answer is an RS256 JWT access token (``typ`` ``at+jwt``) signed with the fake issuer's own key, bound
to the proof's key (``cnf.jkt``), with ``herid`` the HER-ids the client may act for (``["0"]``: all).
Its public key is served as the JWKS and is :attr:`FakeHelseId.public_key`, for
:class:`~gateway.testing.nhn.dpop_check.DpopAuthorizer`. Refusals carry an ``error_description`` naming
the failed check (real HelseID says less; a fake that explains itself is quicker to debug against).

Knobs for tests, on ``app[HELSEID]``: ``token_lifetime_s``, :meth:`FakeHelseId.fail_next` (the next N
token requests answer 5xx or 429), :meth:`FakeHelseId.nonces` ``.rotate()``, and the counters.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from gateway.testing.nhn.dpop_check import PROOF_ALGORITHMS, NonceSource, ProofChecker, ProofError, ReplayCache

__all__ = ["HELSEID", "FakeHelseId", "HelseIdConfig", "RegisteredClient", "helseid_app"]

DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
JWKS_PATH: Final = "/.well-known/openid-configuration/jwks"
TOKEN_PATH: Final = "/connect/token"  # noqa: S105 - a path, not a secret
_JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_ALGORITHMS: Final = sorted(PROOF_ALGORITHMS)


@dataclass(frozen=True)
class RegisteredClient:
    """A HelseID client: its id, its public key (JWK), the scopes it may have, the HER-ids it may act for
    (None: all, the ``herid`` claim ``0``) and any further claims its tokens carry (HelseID's
    ``helseid://claims/client/…`` claims, for instance)."""

    client_id: str
    public_jwk: Mapping[str, Any]
    scopes: frozenset[str] = frozenset({"nhn:msh/api"})
    her_ids: frozenset[str] | None = None
    extra_claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HelseIdConfig:
    """``issuer`` None: the origin the client used (``http://127.0.0.1:<port>``), handy for test servers
    on a free port. ``clock`` is read for every time check and every time written into a token."""

    clients: tuple[RegisteredClient, ...]
    issuer: str | None = None
    #: the tokens' ``aud``; None: the API resources of the scopes granted (``nhn:msh/api`` -> ``nhn:msh``), as
    #: HelseID sets it
    audience: str | None = None
    token_lifetime_s: int = 300
    nonce_interval_s: float = 300.0
    nonce_grace_s: float = 30.0
    require_nonce: bool = True
    skew_s: float = 5.0
    max_assertion_lifetime_s: float = 300.0
    proof_max_age_s: float = 60.0
    clock: Callable[[], float] = time.time


class _Refused(ProofError):
    """A token request the fake HelseID refuses: the OAuth error, the failed check, the HTTP status."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(error, description)
        self.status = status


class FakeHelseId:
    """The state behind the app: registered clients, the issuer key, nonces, replay caches, knobs."""

    def __init__(self, config: HelseIdConfig) -> None:
        self.config = config
        self._clock = config.clock
        self.clients = {c.client_id: c for c in config.clients}
        self._client_keys = {c.client_id: RSAKey.import_key(dict(c.public_jwk)) for c in config.clients}
        self._key = RSAKey.generate_key(2048, parameters={"use": "sig"}, private=True)
        self.key_id = self._key.thumbprint()
        self.token_lifetime_s = config.token_lifetime_s
        self.nonces = NonceSource(self._clock, interval_s=config.nonce_interval_s, grace_s=config.nonce_grace_s)
        self.proofs = ProofChecker(
            self._clock,
            max_age_s=config.proof_max_age_s,
            skew_s=config.skew_s,
            nonces=self.nonces if config.require_nonce else None,
        )
        self._assertions = ReplayCache(self._clock)
        self._failures: list[tuple[int, int | None]] = []
        #: counters for tests: discovery documents served, token requests received, tokens issued
        self.discovery_requests = 0
        self.token_requests = 0
        self.tokens_issued = 0

    @property
    def public_key(self) -> RSAKey:
        """The public half of the key access tokens are signed with."""
        return RSAKey.import_key(self.public_jwk)

    @property
    def public_jwk(self) -> dict[str, Any]:
        return {**self._key.as_dict(private=False), "kid": self.key_id, "alg": "RS256", "use": "sig"}

    def fail_next(self, count: int, *, status: int = 503, retry_after_s: int | None = None) -> None:
        """The next ``count`` token requests answer ``status`` (5xx or 429; a 4xx is a refusal), with
        ``Retry-After`` if given."""
        self._failures.extend([(status, retry_after_s)] * count)

    def recover(self) -> None:
        """Forget the failures :meth:`fail_next` queued: token requests are answered again."""
        self._failures.clear()

    def take_failure(self) -> tuple[int, int | None] | None:
        """The forced answer (status, Retry-After) for this token request, if one is queued."""
        return self._failures.pop(0) if self._failures else None

    def issuer_for(self, request: web.Request) -> str:
        return self.config.issuer or str(request.url.origin())

    # --- the token request, step by step ---------------------------------------------------------

    def token(self, form: Mapping[str, str], dpop: list[str], issuer: str) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise _Refused("unsupported_grant_type", "only client_credentials is supported")
        client = self._authenticate(form, issuer)
        try:
            jkt = self.proofs.check(dpop, "POST", issuer + TOKEN_PATH)
        except ProofError as exc:
            raise _Refused(exc.error, exc.description) from None
        scopes = self._scopes(client, form.get("scope"))
        now = int(self._clock())
        claims: dict[str, Any] = {
            **client.extra_claims,
            "iss": issuer,
            "aud": self.config.audience or _resources(scopes),
            "client_id": client.client_id,
            "scope": scopes,
            "herid": ["0"] if client.her_ids is None else sorted(client.her_ids),
            "cnf": {"jkt": jkt},
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime_s,
            "jti": secrets.token_urlsafe(16),
        }
        header = {"typ": "at+jwt", "alg": "RS256", "kid": self.key_id}
        token = jwt.encode(header, claims, self._key, algorithms=["RS256"])
        self.tokens_issued += 1
        return {
            "access_token": token,
            "expires_in": self.token_lifetime_s,
            "token_type": "DPoP",
            "scope": " ".join(scopes),
        }

    def _authenticate(self, form: Mapping[str, str], issuer: str) -> RegisteredClient:
        if form.get("client_assertion_type") != _JWT_BEARER:
            raise _Refused("invalid_client", "client_assertion_type must be jwt-bearer (private_key_jwt)")
        client = self.clients.get(form.get("client_id", ""))
        assertion = form.get("client_assertion", "")
        if client is None:
            raise _Refused("invalid_client", "unknown client_id")
        try:
            header = jws.extract_compact(assertion.encode("ascii")).headers()
            if header.get("typ") != "client-authentication+jwt":
                raise _Refused("invalid_client", "the assertion's typ is not client-authentication+jwt")
            alg = str(header.get("alg"))
            if alg not in PROOF_ALGORITHMS:
                raise _Refused("invalid_client", "the assertion's alg is not an accepted asymmetric algorithm")
            claims = jwt.decode(assertion, self._client_keys[client.client_id], algorithms=[alg]).claims
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise _Refused("invalid_client", "the assertion is not signed by the client's registered key") from None
        self._check_assertion(claims, client.client_id, issuer)
        return client

    def _check_assertion(self, claims: Mapping[str, Any], client_id: str, issuer: str) -> None:
        now, skew = self._clock(), self.config.skew_s
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise _Refused("invalid_client", "the assertion's iss and sub must be the client_id")
        aud = claims.get("aud")
        if issuer not in ([aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []):
            raise _Refused("invalid_client", "the assertion's aud is not this issuer")
        exp, nbf, iat = _time(claims.get("exp")), _time(claims.get("nbf")), _time(claims.get("iat"))
        if exp is None or exp <= now - skew:
            raise _Refused("invalid_client", "the assertion has expired (or has no exp)")
        if exp > now + self.config.max_assertion_lifetime_s:
            raise _Refused("invalid_client", "the assertion's exp is too far ahead")
        if "nbf" in claims and (nbf is None or nbf > now + skew):
            raise _Refused("invalid_client", "the assertion is not valid yet (nbf)")
        if iat is None or iat > now + skew:
            raise _Refused("invalid_client", "the assertion's iat is missing or ahead of the clock")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise _Refused("invalid_client", "the assertion has no jti")
        if self._assertions.seen(f"{client_id}:{jti}", keep_until=exp + skew):
            raise _Refused("invalid_client", "the assertion's jti was used before (replayed assertion)")

    def _scopes(self, client: RegisteredClient, asked: str | None) -> list[str]:
        wanted = asked.split() if asked else sorted(client.scopes)
        if not wanted or not set(wanted) <= client.scopes:
            raise _Refused("invalid_scope", "the client may not have the scope asked for")
        return wanted


def _resources(scopes: list[str]) -> str | list[str]:
    """The API resources the scopes belong to (``nhn:cppa/access-with-dpop`` -> ``nhn:cppa``): one as a string."""
    names = sorted({scope.partition("/")[0] for scope in scopes})
    return names[0] if len(names) == 1 else names


def _time(value: object) -> float | None:
    """A NumericDate claim as seconds, or None when it is missing or not a number."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


HELSEID: Final = web.AppKey("helseid", FakeHelseId)


def helseid_app(config: HelseIdConfig) -> web.Application:
    """The fake HelseID as an aiohttp app; its state (knobs, public key, counters) is ``app[HELSEID]``."""
    fake = FakeHelseId(config)
    app = web.Application()
    app[HELSEID] = fake

    async def discovery(request: web.Request) -> web.Response:
        fake.discovery_requests += 1
        issuer = fake.issuer_for(request)
        return web.json_response(
            {
                "issuer": issuer,
                "jwks_uri": issuer + JWKS_PATH,
                "token_endpoint": issuer + TOKEN_PATH,
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": _ASSERTION_ALGORITHMS,
                "dpop_signing_alg_values_supported": _ASSERTION_ALGORITHMS,
                "scopes_supported": sorted({s for c in fake.clients.values() for s in c.scopes}),
            }
        )

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response({"keys": [fake.public_jwk]})

    async def token(request: web.Request) -> web.Response:
        fake.token_requests += 1
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        failure = fake.take_failure()
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return web.json_response({"error": "server_error"}, status=status, headers=headers)
        try:
            if request.content_type != "application/x-www-form-urlencoded":
                raise _Refused("invalid_request", "the body must be application/x-www-form-urlencoded")
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            body = fake.token(form, request.headers.getall("DPoP", []), fake.issuer_for(request))
        except _Refused as exc:
            headers = dict(no_store)
            if exc.error == "use_dpop_nonce":
                headers["DPoP-Nonce"] = fake.nonces.current()
            answer = {"error": exc.error, "error_description": exc.description}
            return web.json_response(answer, status=exc.status, headers=headers)
        return web.json_response(body, headers=no_store)

    app.router.add_get(DISCOVERY_PATH, discovery)
    app.router.add_get(JWKS_PATH, jwks)
    app.router.add_post(TOKEN_PATH, token)
    return app

"""The resource server's side of DPoP (RFC 9449): every check NHN's API makes on a request's credentials.

:class:`ProofChecker` checks one DPoP proof - the fake HelseID uses it at its token endpoint, the API
simulator through :class:`DpopAuthorizer`:

- exactly one ``DPoP`` header; a compact JWS with ``typ`` ``dpop+jwt``, an asymmetric ``alg`` and a
  *public* ``jwk`` in its header, signed by that key;
- ``htm`` the request's method, ``htu`` the request's URL without query and fragment (after the usual
  normalisation: case of scheme and host, default port), ``iat`` no older than ``max_age_s`` and no more
  than ``skew_s`` ahead, a ``jti`` not seen before (a bounded cache, kept as long as a proof is young
  enough to be taken), ``ath`` = the hash of the access token when one goes with the request, and the
  server's current ``nonce`` when the server demands nonces.

:class:`DpopAuthorizer` adds the access token: ``Authorization: DPoP`` (a DPoP-bound token sent as
``Bearer`` is refused), signed by the issuer, not expired, for the audience and scope, bound to the
proof's key (``cnf.jkt`` = the thumbprint of the proof's ``jwk``). A refusal is a 401 with
``WWW-Authenticate: DPoP error="…"`` and an RFC 7807 problem body naming the failed check - never the
token or the proof.

Nothing here imports the client (adapters/edi2): a check shared with the code it tests proves nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from joserfc import jws, jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, RSAKey, import_key
from joserfc.jws import JWSRegistry

from gateway.errors import Unauthorized
from gateway.testing.nhn.principal import Principal

__all__ = [
    "PROOF_ALGORITHMS",
    "DpopAuthorizer",
    "NonceSource",
    "ProofChecker",
    "ProofError",
    "ReplayCache",
    "normal_url",
    "unauthorized",
]

#: Asymmetric algorithms a proof may use (never ``none``, never an HMAC).
PROOF_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"})
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_MAX_PROOF_CHARS: Final = 8192
_MIN_RSA_BITS: Final = 2048  # joserfc warns below this; the checker refuses


class _Registry(JWSRegistry):
    max_header_length = 4096  # the header carries an RSA public key


class ProofError(Unauthorized):
    """A refused proof or token: ``error`` is the OAuth error code (``invalid_dpop_proof``,
    ``use_dpop_nonce``, ``invalid_token``, ``invalid_client`` …), ``description`` the failed check."""

    event = "sim.dpop_refused"

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


class ReplayCache:
    """Identifiers seen, each kept until it could no longer be taken anyway; at most ``capacity`` of
    them (the oldest go first - by then they are long too old to pass the time checks)."""

    def __init__(self, clock: Callable[[], float], *, capacity: int = 100_000) -> None:
        self._clock = clock
        self._capacity = capacity
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def seen(self, identifier: str, *, keep_until: float) -> bool:
        """True when ``identifier`` was seen before; otherwise remember it until ``keep_until``."""
        now = self._clock()
        # every entry is kept for the same time, so the oldest entries are the first to lapse
        while self._until and next(iter(self._until.values())) < now:
            self._until.popitem(last=False)
        if identifier in self._until:
            return True
        while len(self._until) >= self._capacity:
            self._until.popitem(last=False)
        self._until[identifier] = keep_until
        return False


class NonceSource:
    """Server nonces: a fresh one every ``interval_s`` seconds; the one before stays good for
    ``grace_s`` seconds after it was replaced, so requests already on their way are not refused."""

    def __init__(self, clock: Callable[[], float], *, interval_s: float = 300.0, grace_s: float = 30.0) -> None:
        self._clock = clock
        self.interval_s = interval_s
        self.grace_s = grace_s
        self._current = secrets.token_urlsafe(24)
        self._previous: str | None = None
        self._since = clock()

    def rotate(self) -> str:
        """Replace the nonce now (a fault knob; rotation also happens by itself)."""
        self._previous, self._current, self._since = self._current, secrets.token_urlsafe(24), self._clock()
        return self._current

    def current(self) -> str:
        if self._clock() >= self._since + self.interval_s:
            self.rotate()
        return self._current

    def accepts(self, nonce: object) -> bool:
        current = self.current()
        if not isinstance(nonce, str):
            return False
        if secrets.compare_digest(nonce, current):
            return True
        return (
            self._previous is not None
            and self._clock() < self._since + self.grace_s
            and secrets.compare_digest(nonce, self._previous)
        )


def normal_url(url: str) -> str:
    """``url`` without query and fragment, scheme and host in lower case, the default port dropped and an
    empty path as ``/`` (RFC 9449 §4.3: syntax- and scheme-based normalisation before comparing)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def _ath(access_token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(access_token.encode("ascii")).digest()).rstrip(b"=").decode()


class ProofChecker:
    """Checks DPoP proofs for one server; keeps the ``jti`` seen. ``nonces`` None: no nonce demanded."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        max_age_s: float = 60.0,
        skew_s: float = 5.0,
        nonces: NonceSource | None = None,
        replay_capacity: int = 100_000,
    ) -> None:
        self._clock = clock
        self.max_age_s = max_age_s
        self.skew_s = skew_s
        self.nonces = nonces
        self._replay = ReplayCache(clock, capacity=replay_capacity)

    def check(self, values: Sequence[str], method: str, url: str, *, access_token: str | None = None) -> str:
        """Check the ``DPoP`` header ``values`` of a request; the thumbprint of the proof's key, or
        :class:`ProofError`."""
        if len(values) != 1:
            raise ProofError("invalid_dpop_proof", "exactly one DPoP header is required")
        proof = values[0]
        if len(proof) > _MAX_PROOF_CHARS:
            raise ProofError("invalid_dpop_proof", "the proof is too large")
        claims, jkt = _verified_proof(proof)
        now = self._clock()
        if claims.get("htm") != method.upper():
            raise ProofError("invalid_dpop_proof", "htm is not the request's method")
        htu = claims.get("htu")
        if not isinstance(htu, str) or normal_url(htu) != normal_url(url) or urlsplit(htu).query:
            raise ProofError("invalid_dpop_proof", "htu is not the request's URL (without query)")
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise ProofError("invalid_dpop_proof", "iat is missing")
        if iat < now - self.max_age_s or iat > now + self.skew_s:
            raise ProofError("invalid_dpop_proof", "iat is outside the accepted window")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str):
                raise ProofError("invalid_dpop_proof", "ath is missing")
            if not secrets.compare_digest(ath, _ath(access_token)):
                raise ProofError("invalid_dpop_proof", "ath is not the hash of the access token")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= 256:
            raise ProofError("invalid_dpop_proof", "jti is missing")
        if self._replay.seen(f"{jkt}:{jti}", keep_until=now + self.max_age_s + self.skew_s):
            raise ProofError("invalid_dpop_proof", "jti was used before (replayed proof)")
        if self.nonces is not None and not self.nonces.accepts(claims.get("nonce")):
            raise ProofError("use_dpop_nonce", "a DPoP nonce is required")
        return jkt


def _verified_proof(proof: str) -> tuple[dict[str, Any], str]:
    """The claims and key thumbprint of a proof whose signature verifies with its own ``jwk``."""
    registry = _Registry(algorithms=sorted(PROOF_ALGORITHMS))
    try:
        header = jws.extract_compact(proof.encode("ascii"), registry=registry).headers()
    except (JoseError, ValueError, UnicodeError) as exc:
        raise ProofError("invalid_dpop_proof", "the proof is not a JWS") from exc
    if header.get("typ") != "dpop+jwt":
        raise ProofError("invalid_dpop_proof", "typ is not dpop+jwt")
    if header.get("alg") not in PROOF_ALGORITHMS:
        raise ProofError("invalid_dpop_proof", "alg is not an accepted asymmetric algorithm")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC"):
        raise ProofError("invalid_dpop_proof", "jwk is missing or not an RSA or EC key")
    if _PRIVATE_MEMBERS & set(jwk):
        raise ProofError("invalid_dpop_proof", "jwk holds a private key")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SecurityWarning)  # joserfc's warning about a short RSA key
            key = import_key(jwk)
    except SecurityWarning:
        raise ProofError("invalid_dpop_proof", f"the RSA key is shorter than {_MIN_RSA_BITS} bits") from None
    except (JoseError, ValueError, TypeError) as exc:
        raise ProofError("invalid_dpop_proof", "jwk is not a usable public key") from exc
    if not isinstance(key, RSAKey | ECKey):
        raise ProofError("invalid_dpop_proof", "jwk is not an RSA or EC key")
    try:
        claims = jwt.decode(proof, key, algorithms=[str(header["alg"])], registry=registry).claims
    except (JoseError, ValueError, TypeError) as exc:
        raise ProofError("invalid_dpop_proof", "the signature does not verify with the jwk") from exc
    return claims, key.thumbprint()


def unauthorized(error: str | None, detail: str, *, nonce: str | None = None, path: str = "") -> web.HTTPUnauthorized:
    """The 401 a resource server answers: ``WWW-Authenticate: DPoP`` (with ``error`` unless the request
    carried no credentials at all, RFC 6750 §3.1), ``DPoP-Nonce`` when asking for one, an RFC 7807 body."""
    challenge = f'DPoP algs="{" ".join(sorted(PROOF_ALGORITHMS))}"'
    if error:
        challenge += f', error="{error}", error_description="{detail}"'
    headers = {"WWW-Authenticate": challenge, "Cache-Control": "no-store"}
    if nonce is not None:
        headers["DPoP-Nonce"] = nonce
    problem = {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": detail, "instance": path}
    if error:
        problem["error"] = error
    return web.HTTPUnauthorized(headers=headers, text=json.dumps(problem), content_type="application/problem+json")


class DpopAuthorizer:
    """An :data:`~gateway.testing.nhn.principal.Authorizer` for a resource server that takes HelseID's
    DPoP-bound access tokens. ``issuer_key_public`` is the issuer's token-signing key (RSA, RS256);
    ``issuer`` when given must be the token's ``iss``. ``require_nonce`` makes the server demand its own
    DPoP nonces (answered 401 ``use_dpop_nonce`` + ``DPoP-Nonce``), rotated every ``nonce_interval_s``."""

    def __init__(
        self,
        issuer_key_public: RSAKey | Mapping[str, Any],
        audience: str = "nhn:msh",
        *,
        issuer: str | None = None,
        scope: str = "nhn:msh/api",
        clock: Callable[[], float] = time.time,
        skew_s: float = 5.0,
        proof_max_age_s: float = 60.0,
        require_nonce: bool = False,
        nonce_interval_s: float = 300.0,
        replay_capacity: int = 100_000,
    ) -> None:
        key = issuer_key_public if isinstance(issuer_key_public, RSAKey) else RSAKey.import_key(dict(issuer_key_public))
        self._issuer_key = RSAKey.import_key(key.as_dict(private=False))  # only ever the public half
        self.audience = audience
        self.issuer = issuer
        self.scope = scope
        self._clock = clock
        self.skew_s = skew_s
        self.nonces = NonceSource(clock, interval_s=nonce_interval_s) if require_nonce else None
        self.proofs = ProofChecker(
            clock, max_age_s=proof_max_age_s, skew_s=skew_s, nonces=self.nonces, replay_capacity=replay_capacity
        )

    async def __call__(self, request: web.Request) -> Principal:
        try:
            return self.check(
                request.method,
                str(request.url),
                request.headers.getall("Authorization", []),
                request.headers.getall("DPoP", []),
            )
        except ProofError as exc:
            nonce = self.nonces.current() if exc.error == "use_dpop_nonce" and self.nonces else None
            raise unauthorized(exc.error or None, exc.description, nonce=nonce, path=request.path) from None

    def check(self, method: str, url: str, authorization: Sequence[str], dpop: Sequence[str]) -> Principal:
        """The principal of a request with these ``Authorization`` and ``DPoP`` header values, or
        :class:`ProofError` (``error`` empty when the request carried no credentials at all)."""
        if not authorization:
            raise ProofError("", "DPoP authorization is required")
        if len(authorization) != 1:
            raise ProofError("invalid_request", "exactly one Authorization header is required")
        scheme, _, token = authorization[0].partition(" ")
        token = token.strip()
        if scheme.lower() != "dpop":
            raise ProofError("invalid_token", "the access token is DPoP-bound: use the DPoP scheme, not Bearer")
        if not token:
            raise ProofError("invalid_token", "the access token is missing")
        claims = self._token_claims(token)
        jkt = self.proofs.check(dpop, method, url, access_token=token)
        cnf = claims.get("cnf")
        bound = cnf.get("jkt") if isinstance(cnf, dict) else None
        if not isinstance(bound, str) or not secrets.compare_digest(bound, jkt):
            raise ProofError("invalid_dpop_proof", "the proof's key is not the key the token is bound to")
        return Principal(str(claims.get("client_id", "")), _her_ids(claims.get("herid")))

    def _token_claims(self, token: str) -> dict[str, Any]:
        try:
            decoded = jwt.decode(token, self._issuer_key, algorithms=["RS256"])
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise ProofError("invalid_token", "the access token's signature does not verify") from None
        claims, now = decoded.claims, self._clock()
        if decoded.header.get("typ") != "at+jwt":
            raise ProofError("invalid_token", "the token is not an access token (typ at+jwt)")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise ProofError("invalid_token", "the token is from another issuer")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= now - self.skew_s:
            raise ProofError("invalid_token", "the access token has expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > now + self.skew_s:
            raise ProofError("invalid_token", "the access token is not valid yet")
        aud = claims.get("aud")
        if self.audience not in ([aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []):
            raise ProofError("invalid_token", f"the token is not for audience {self.audience}")
        scope = claims.get("scope")
        scopes = scope.split() if isinstance(scope, str) else scope if isinstance(scope, list) else []
        if self.scope not in scopes:
            raise ProofError("invalid_token", f"the token lacks scope {self.scope}")
        return claims


def _her_ids(claim: object) -> frozenset[str] | None:
    """The ``herid`` claim: ``0`` means every HER-id; a missing claim grants none (fails closed)."""
    values = [claim] if isinstance(claim, str | int) else claim if isinstance(claim, list) else []
    ids = frozenset(str(v) for v in values)
    return None if "0" in ids else ids

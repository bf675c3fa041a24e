"""The HelseID client's key and the two JWTs it signs: the client assertion and the DPoP proof.

HelseID authenticates the client with ``private_key_jwt`` (RFC 7523): every token request carries a
short-lived *client assertion* signed with the client's private key. DPoP (RFC 9449) binds the access
token to the same key: every request - to the token endpoint and to the API - carries a fresh *proof*
naming its method and URL, so a token that leaks is useless without the key.

The key is read once from a file (a private JWK as HelseID's self-service hands it out, or an RSA PEM):
parsing an RSA key is slow, and a key file read per request would be a key file that can change under a
running gateway. :class:`SigningKey` never shows its private half - not in ``repr``, not in a log line, not
in an error message (those name the file, never its content). JOSE is done by joserfc.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import warnings
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

from gateway.errors import ConfigError

__all__ = [
    "ASSERTION_LIFETIME_S",
    "ASSERTION_TYPE",
    "DPOP_TYPE",
    "Algorithm",
    "SigningKey",
    "access_token_hash",
    "client_assertion",
    "dpop_proof",
    "htu_of",
]

Algorithm = Literal["RS256", "PS512"]
ALGORITHMS: Final = frozenset(get_args(Algorithm))
DEFAULT_ALGORITHM: Final[Algorithm] = "PS512"  # as the KS client uses; NAV's uses RS256

DPOP_TYPE: Final = "dpop+jwt"
ASSERTION_TYPE: Final = "client-authentication+jwt"
#: How long a client assertion is valid: NAV uses 60 s, KS 5 s; it is used once, within a second.
ASSERTION_LIFETIME_S: Final = 60
_MIN_RSA_BITS: Final = 2048


class _Registry(JWSRegistry):
    # A DPoP proof carries the public key in its header: a 2048-4096-bit RSA modulus is more than
    # joserfc's default header limit of 512 bytes.
    max_header_length = 4096


class SigningKey:
    """The HelseID client's RSA private key, its key id and the algorithm it signs with.

    ``kid`` is the JWK's own ``kid`` when the file has one, otherwise the key's RFC 7638 thumbprint (what
    HelseID's self-service uses). The algorithm is ``alg`` when given, else the JWK's ``alg`` when it is
    one of RS256/PS512, else PS512.
    """

    __slots__ = ("_key", "_public_jwk", "_registry", "alg", "kid", "thumbprint")

    def __init__(self, key: RSAKey, *, alg: Algorithm | None = None, kid: str | None = None) -> None:
        if not key.is_private:
            raise ConfigError("The HelseID client key must be a private key; this one is public only.")
        bits = int(key.raw_value.key_size)
        if bits < _MIN_RSA_BITS:
            raise ConfigError(f"The HelseID client key has {bits} bits; at least {_MIN_RSA_BITS} are needed.")
        if alg is not None and alg not in ALGORITHMS:
            raise ConfigError(f"Signing algorithm {alg!r} is not one of {sorted(ALGORITHMS)}.")
        self._key = key
        self.alg: Algorithm = alg or DEFAULT_ALGORITHM
        self.thumbprint: str = key.thumbprint()
        self.kid: str = kid or self.thumbprint
        public = {k: str(v) for k, v in key.as_dict(private=False).items() if k in ("kty", "n", "e")}
        self._public_jwk: dict[str, str] = public
        self._registry = _Registry(algorithms=[self.alg])

    @classmethod
    def from_file(cls, path: str | Path, *, alg: Algorithm | None = None) -> SigningKey:
        """Read a private JWK (JSON; a JWK set of one key is taken too) or an RSA PEM. Errors name the file
        and what is wrong with it, never its content."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read the HelseID client key {path}: {exc.strerror or exc}.") from exc
        return cls.from_bytes(data, alg=alg, source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, alg: Algorithm | None = None, source: str = "the key") -> SigningKey:
        if data.lstrip().startswith(b"{"):
            return cls._from_jwk(data, alg=alg, source=source)
        try:
            key = _import(data)
        except (JoseError, ValueError, TypeError) as exc:
            raise ConfigError(f"{source} is neither a JWK (JSON) nor an RSA private key in PEM.") from exc
        return cls(key, alg=alg)

    @classmethod
    def _from_jwk(cls, data: bytes, *, alg: Algorithm | None, source: str) -> SigningKey:
        try:
            jwk = json.loads(data)
        except ValueError as exc:
            raise ConfigError(f"{source} starts like a JWK but is not valid JSON.") from exc
        if isinstance(jwk, dict) and isinstance(jwk.get("keys"), list) and len(jwk["keys"]) == 1:
            jwk = jwk["keys"][0]
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            raise ConfigError(f"{source} is not an RSA JWK (HelseID client keys are RSA).")
        try:
            key = _import(jwk)
        except (JoseError, ValueError, TypeError) as exc:
            raise ConfigError(f"{source} is not a usable RSA JWK ({type(exc).__name__}).") from exc
        jwk_alg = jwk.get("alg")
        chosen = alg or (jwk_alg if jwk_alg in ALGORITHMS else None)
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) and jwk.get("kid") else None
        return cls(key, alg=chosen, kid=kid)

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (``kty``, ``n``, ``e``): what a DPoP proof carries and what is
        registered with HelseID."""
        return dict(self._public_jwk)

    def sign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        """A compact JWS of ``claims`` with ``header`` plus this key's ``alg``."""
        return jwt.encode({**header, "alg": self.alg}, claims, self._key, registry=self._registry)

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"


def _import(data: bytes | dict[str, Any]) -> RSAKey:
    with warnings.catch_warnings():
        # joserfc warns about a short key; SigningKey refuses one with a ConfigError that says so
        warnings.simplefilter("ignore", SecurityWarning)
        return RSAKey.import_key(data)


def htu_of(url: str) -> str:
    """The ``htu`` of a request: its URL without query and fragment (RFC 9449 §4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url (no padding) of the SHA-256 of the access token's ASCII bytes."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _jti() -> str:
    return secrets.token_urlsafe(24)


def dpop_proof(
    key: SigningKey,
    method: str,
    url: str,
    *,
    nonce: str | None = None,
    access_token: str | None = None,
    now: float | None = None,
) -> str:
    """A DPoP proof for one request: ``htm`` the method, ``htu`` the URL without query and fragment, a fresh
    ``jti``; with the server's ``nonce`` when it asked for one, and ``ath`` when an access token goes with
    the request (every API call)."""
    claims: dict[str, Any] = {
        "jti": _jti(),
        "iat": int(time.time() if now is None else now),
        "htm": method.upper(),
        "htu": htu_of(url),
    }
    if nonce is not None:
        claims["nonce"] = nonce
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    return key.sign({"typ": DPOP_TYPE, "jwk": key.public_jwk}, claims)


def client_assertion(
    key: SigningKey,
    client_id: str,
    audience: str,
    *,
    now: float | None = None,
    lifetime_s: int = ASSERTION_LIFETIME_S,
) -> str:
    """A ``private_key_jwt`` client assertion: ``iss`` = ``sub`` = the client id, ``aud`` the HelseID
    issuer, a fresh ``jti`` (the server refuses a second use), valid for ``lifetime_s`` seconds."""
    iat = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": _jti(),
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime_s,
    }
    return key.sign({"typ": ASSERTION_TYPE, "kid": key.kid}, claims)

"""The client's key and JWTs, the server side's caches, and that no secret reaches a log line or an error."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
from pathlib import Path

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from joserfc import jws, jwt
from joserfc.jwk import RSAKey

from adapters.helseid.dpop import SigningKey, client_assertion, dpop_proof, htu_of
from gateway.clock import ManualClock
from gateway.errors import ConfigError, GatewayError
from gateway.testing.nhn.dpop_check import NonceSource, ReplayCache, normal_url
from tests.edi2.helseid_harness import CLIENT_ID, rsa_key, running, signing_key

JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}")


def parts(token: str) -> tuple[dict[str, object], dict[str, object]]:
    obj = jws.extract_compact(token.encode(), registry=_big())
    return dict(obj.headers()), json.loads(obj.payload or b"{}")


def _big() -> jws.JWSRegistry:
    class Big(jws.JWSRegistry):
        max_header_length = 8192

    return Big(algorithms=["PS512", "RS256"])


class TestSigningKey:
    def test_from_jwk_file(self, tmp_path: Path) -> None:
        """A private JWK: its kid and alg are used; a JWK set of one key is taken too."""
        jwk = {**rsa_key("client").as_dict(private=True), "kid": "helseid-2026", "alg": "RS256"}
        path = tmp_path / "client.jwk"
        path.write_text(json.dumps(jwk))
        key = SigningKey.from_file(path)
        assert (key.kid, key.alg) == ("helseid-2026", "RS256")
        assert SigningKey.from_file(path, alg="PS512").alg == "PS512"
        path.write_text(json.dumps({"keys": [jwk]}))
        assert SigningKey.from_file(path).kid == "helseid-2026"

    def test_from_pem_file(self, tmp_path: Path) -> None:
        """An RSA PEM: kid is the RFC 7638 thumbprint, alg PS512."""
        path = tmp_path / "client.pem"
        path.write_bytes(rsa_key("client").as_pem(private=True))
        key = SigningKey.from_file(path)
        assert key.kid == key.thumbprint == rsa_key("client").thumbprint()
        assert key.alg == "PS512"
        assert set(key.public_jwk) == {"kty", "n", "e"}

    def test_unusable_files_name_the_file_not_the_content(self, tmp_path: Path) -> None:
        public = tmp_path / "public.jwk"
        public.write_text(json.dumps(rsa_key("client").as_dict(private=False)))
        with pytest.raises(ConfigError, match="private key"):
            SigningKey.from_file(public)
        garbage = tmp_path / "garbage.pem"
        garbage.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0IHNlY3JldA==\n-----END PRIVATE KEY-----\n")
        with pytest.raises(ConfigError, match=r"garbage\.pem") as caught:
            SigningKey.from_file(garbage)
        assert "c2VjcmV0" not in str(caught.value)
        with pytest.raises(ConfigError, match="Cannot read"):
            SigningKey.from_file(tmp_path / "missing.jwk")
        small = tmp_path / "small.pem"
        weak = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the weak key that must be refused
        small.write_bytes(weak.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        with pytest.raises(ConfigError, match="at least 2048"):
            SigningKey.from_file(small)

    def test_repr_shows_no_key_material(self) -> None:
        key = signing_key()
        private = rsa_key("client").as_dict(private=True)
        assert str(private["d"]) not in repr(key) and str(private["n"]) not in repr(key)


class TestJwts:
    def test_dpop_proof(self) -> None:
        """typ dpop+jwt, alg, the public jwk; htm, htu without query and fragment, nonce, ath, fresh jti."""
        key = signing_key()
        token = "an.access.token"
        proof = dpop_proof(
            key,
            "get",
            "https://api.example/Messages?ReceiverHerIds=1#x",
            nonce="n1",
            access_token=token,
            now=1_800_000_000.5,
        )
        header, claims = parts(proof)
        assert header == {"typ": "dpop+jwt", "alg": "PS512", "jwk": key.public_jwk}
        expected_ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
        assert claims["htm"] == "GET" and claims["htu"] == "https://api.example/Messages"
        assert (claims["iat"], claims["nonce"], claims["ath"]) == (1_800_000_000, "n1", expected_ath)
        again = parts(dpop_proof(key, "GET", "https://api.example/Messages"))[1]
        assert again["jti"] != claims["jti"] and "nonce" not in again and "ath" not in again
        public: dict[str, str | list[str]] = {**key.public_jwk}
        jwt.decode(proof, RSAKey.import_key(public), algorithms=["PS512"], registry=_big())  # verifies

    def test_client_assertion(self) -> None:
        key = signing_key()
        header, claims = parts(client_assertion(key, CLIENT_ID, "https://helseid-sts.test.nhn.no", now=1_800_000_000))
        assert header == {"typ": "client-authentication+jwt", "kid": key.kid, "alg": "PS512"}
        assert claims["iss"] == claims["sub"] == CLIENT_ID and claims["aud"] == "https://helseid-sts.test.nhn.no"
        assert (claims["iat"], claims["nbf"], claims["exp"]) == (1_800_000_000, 1_800_000_000, 1_800_000_060)
        assert claims["jti"] != parts(client_assertion(key, CLIENT_ID, "x"))[1]["jti"]

    def test_htu_and_its_normal_form(self) -> None:
        assert htu_of("https://h.example:8443/a/b?c=d#e") == "https://h.example:8443/a/b"
        assert htu_of("http://h.example") == "http://h.example/"
        assert normal_url("HTTPS://H.Example:443/a?x") == normal_url("https://h.example/a")
        assert normal_url("http://h:8080/a") != normal_url("http://h/a")


class TestServerCaches:
    def test_replay_cache_forgets_only_what_has_lapsed_and_stays_bounded(self) -> None:
        clock = ManualClock(1000.0)
        cache = ReplayCache(clock.now, capacity=3)
        assert not cache.seen("a", keep_until=1060)
        assert cache.seen("a", keep_until=1060)
        clock.advance(61)
        assert not cache.seen("a", keep_until=1121)  # lapsed, and too old to pass a time check anyway
        for name in "bcde":
            cache.seen(name, keep_until=1121)
        assert len(cache) == 3

    def test_nonce_rotation_and_grace(self) -> None:
        clock = ManualClock(1000.0)
        nonces = NonceSource(clock.now, interval_s=60, grace_s=10)
        first = nonces.current()
        assert nonces.accepts(first) and not nonces.accepts("guess") and not nonces.accepts(None)
        clock.advance(60)
        second = nonces.current()
        assert second != first and nonces.accepts(first) and nonces.accepts(second)
        clock.advance(10)
        assert not nonces.accepts(first) and nonces.accepts(second)


class TestNoSecrets:
    async def test_no_token_assertion_proof_or_key_in_logs_or_errors(self) -> None:
        """A whole life - nonce dance, calls, refresh, HelseID down, unreachable, wrong key - with every
        log line and error message captured: none holds a JWT, a token or key material."""
        errors: list[GatewayError] = []
        with structlog.testing.capture_logs() as logs:
            async with running() as h:
                client = h.client()
                token = await h.call(client)
                tokens = [await client.access_token()]
                client.invalidate()
                tokens.append(await client.access_token())
                h.fake.fail_next(1, status=503, retry_after_s=3)
                client.invalidate()
                for bad in (client, h.client(signing_key("other"))):
                    try:
                        await bad.access_token()
                    except GatewayError as exc:
                        errors.append(exc)
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                try:
                    await h.client(issuer=f"http://127.0.0.1:{port}").access_token()
                except GatewayError as exc:
                    errors.append(exc)
        assert token.status == 200
        assert len(errors) == 3 and logs
        private = rsa_key("client").as_dict(private=True)
        secrets = [
            *tokens,
            str(private["d"]),
            str(private["p"]),
            rsa_key("client").as_pem(private=True).decode()[40:80],
        ]
        texts = [repr(entry) for entry in logs] + [str(e) for e in errors] + [repr(e.describe()) for e in errors]
        for text in texts:
            assert not JWT_LIKE.search(text), text
            assert not any(s in text for s in secrets), text
        assert {"helseid.token_issued", "helseid.unavailable", "helseid.refused", "helseid.unreachable"} <= {
            entry["event"] for entry in logs
        }
        assert all("code" in e for e in logs if e["log_level"] in ("warning", "error"))

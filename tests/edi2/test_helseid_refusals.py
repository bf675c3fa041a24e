"""Every refusal the fake HelseID and the DPoP-checking API make, provoked with hand-made requests.

A client that passes the fake proves something only if the fake refuses what a real server refuses;
these tests are that proof. The client's own JWT builders make the requests, bent one claim at a time.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from joserfc import jwt

from adapters.helseid.dpop import client_assertion, dpop_proof
from tests.edi2.helseid_harness import CLIENT_ID, Answer, Harness, registered, rsa_key, running, signing_key

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def form(assertion: str, **extra: str) -> dict[str, str]:
    return {
        "client_id": CLIENT_ID,
        "grant_type": "client_credentials",
        "scope": "nhn:msh/api",
        "client_assertion": assertion,
        "client_assertion_type": JWT_BEARER,
        **extra,
    }


def raw_jwt(header: dict[str, Any], claims: dict[str, Any], key: str = "client", alg: str = "PS512") -> str:
    """A JWT signed as-is: for the claims and headers the client's builders never produce."""
    return jwt.encode({**header, "alg": alg}, claims, rsa_key(key), algorithms=[alg], registry=_registry())


def _registry() -> Any:
    from joserfc.jws import JWSRegistry

    class Big(JWSRegistry):
        max_header_length = 8192

    return Big(algorithms=["PS512"])


def refused(answer: Answer, error: str, words: str, status: int = 400) -> None:
    assert answer.status == status, answer.body
    assert answer.body.get("error") == error, answer.body
    assert words in answer.body.get("error_description", answer.body.get("detail", "")), answer.body


async def token_with_nonce(h: Harness, assertion: str, *, key: str = "client", method: str = "POST") -> Answer:
    """A token request whose proof already carries HelseID's current nonce."""
    proof = dpop_proof(signing_key(key), method, h.token_endpoint, nonce=h.fake.nonces.current(), now=h.clock.now())
    return await h.post_token(form(assertion), proof)


class TestTokenEndpoint:
    async def test_a_good_request_and_its_token(self) -> None:
        """What every refusal below is measured against: a good request gets a DPoP token bound to the
        proof's key, with the claims the API reads."""
        async with running() as h:
            answer = await token_with_nonce(h, client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now()))
            assert answer.status == 200, answer.body
            assert answer.headers["Cache-Control"] == "no-store"
            assert (answer.body["token_type"], answer.body["expires_in"]) == ("DPoP", 300)
            token = jwt.decode(answer.body["access_token"], h.fake.public_key, algorithms=["RS256"])
            assert token.header["typ"] == "at+jwt"
            claims = token.claims
            assert claims["iss"] == h.issuer and claims["aud"] == "nhn:msh" and claims["client_id"] == CLIENT_ID
            assert claims["cnf"] == {"jkt": signing_key().thumbprint}
            assert claims["scope"] == ["nhn:msh/api"] and claims["herid"] == ["8142519", "8142520"]
            assert claims["exp"] - claims["iat"] == 300

    async def test_all_her_ids_is_herid_0(self) -> None:
        async with running(registered(her_ids=None)) as h:
            client = h.client()
            assert (await h.call(client)).body["her_ids"] is None

    async def test_no_nonce_earns_one(self) -> None:
        """A proof without HelseID's nonce: 400 use_dpop_nonce and the nonce in DPoP-Nonce."""
        async with running() as h:
            proof = dpop_proof(signing_key(), "POST", h.token_endpoint, now=h.clock.now())
            assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
            answer = await h.post_token(form(assertion), proof)
            refused(answer, "use_dpop_nonce", "nonce")
            assert answer.headers["DPoP-Nonce"] == h.fake.nonces.current()

    async def test_assertion_used_up_by_the_request_that_earned_the_nonce(self) -> None:
        """Sending the same assertion again with the nonce is a replay: invalid_client."""
        async with running() as h:
            assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
            proof = dpop_proof(signing_key(), "POST", h.token_endpoint, now=h.clock.now())
            first = await h.post_token(form(assertion), proof)
            assert first.body["error"] == "use_dpop_nonce"
            refused(await token_with_nonce(h, assertion), "invalid_client", "replayed assertion")

    async def test_nonce_rotation_and_grace(self) -> None:
        """The nonce rotates; the previous one is taken for the grace period, then refused."""
        async with running(nonce_interval_s=60, nonce_grace_s=10) as h:
            old = h.fake.nonces.current()
            h.clock.advance(61)
            assert h.fake.nonces.current() != old
            for advance, ok in ((0, True), (11, False)):
                h.clock.advance(advance)
                proof = dpop_proof(signing_key(), "POST", h.token_endpoint, nonce=old, now=h.clock.now())
                assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
                answer = await h.post_token(form(assertion), proof)
                assert (answer.status == 200) is ok, answer.body

    async def test_wrong_key(self) -> None:
        async with running() as h:
            assertion = client_assertion(signing_key("other"), CLIENT_ID, h.issuer, now=h.clock.now())
            refused(await token_with_nonce(h, assertion), "invalid_client", "registered key")

    async def test_wrong_audience(self) -> None:
        async with running() as h:
            assertion = client_assertion(signing_key(), CLIENT_ID, h.token_endpoint, now=h.clock.now())
            refused(await token_with_nonce(h, assertion), "invalid_client", "aud")

    async def test_expired_assertion(self) -> None:
        async with running() as h:
            assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now() - 120)
            refused(await token_with_nonce(h, assertion), "invalid_client", "expired")

    async def test_assertion_from_the_future_or_forever(self) -> None:
        async with running() as h:
            ahead = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now() + 60)
            refused(await token_with_nonce(h, ahead), "invalid_client", "not valid yet")
            forever = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now(), lifetime_s=86400)
            refused(await token_with_nonce(h, forever), "invalid_client", "too far ahead")

    async def test_replayed_assertion(self) -> None:
        async with running() as h:
            assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
            assert (await token_with_nonce(h, assertion)).status == 200
            refused(await token_with_nonce(h, assertion), "invalid_client", "replayed assertion")

    async def test_assertion_claims_and_type(self) -> None:
        """iss and sub must both be the client id; the typ must be client-authentication+jwt."""
        async with running() as h:
            now = int(h.clock.now())
            claims = {"iss": CLIENT_ID, "sub": "x", "aud": h.issuer, "jti": "j-1", "iat": now, "exp": now + 30}
            header = {"typ": "client-authentication+jwt", "kid": "k"}
            refused(await token_with_nonce(h, raw_jwt(header, claims)), "invalid_client", "iss and sub")
            claims |= {"sub": CLIENT_ID, "jti": "j-2"}
            refused(await token_with_nonce(h, raw_jwt({"typ": "JWT"}, claims)), "invalid_client", "typ")

    async def test_unknown_client_and_assertion_type(self) -> None:
        async with running() as h:
            assertion = client_assertion(signing_key(), "stranger", h.issuer, now=h.clock.now())
            proof = dpop_proof(
                signing_key(), "POST", h.token_endpoint, nonce=h.fake.nonces.current(), now=h.clock.now()
            )
            refused(await h.post_token(form(assertion, client_id="stranger"), proof), "invalid_client", "unknown")
            plain = form(assertion, client_assertion_type="client_secret")
            refused(await h.post_token(plain, proof), "invalid_client", "jwt-bearer")

    async def test_missing_proof(self) -> None:
        async with running() as h:
            assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
            refused(await h.post_token(form(assertion)), "invalid_dpop_proof", "exactly one DPoP header")

    async def test_replayed_proof(self) -> None:
        async with running() as h:
            proof = dpop_proof(
                signing_key(), "POST", h.token_endpoint, nonce=h.fake.nonces.current(), now=h.clock.now()
            )
            for expected in (200, 400):
                assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
                answer = await h.post_token(form(assertion), proof)
                assert answer.status == expected, answer.body
            refused(answer, "invalid_dpop_proof", "replayed proof")

    @pytest.mark.parametrize(
        ("method", "path", "words"),
        [("GET", "/connect/token", "htm"), ("POST", "/connect/authorize", "htu"), ("POST", "/connect/token?x=1", "")],
    )
    async def test_proof_for_another_request(self, method: str, path: str, words: str) -> None:
        """htm and htu must name the token request; a query in the proof's URL is dropped (RFC 9449 §4.2)."""
        async with running() as h:
            url = h.issuer + path
            proof = dpop_proof(signing_key(), method, url, nonce=h.fake.nonces.current(), now=h.clock.now())
            assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
            answer = await h.post_token(form(assertion), proof)
            if words:
                refused(answer, "invalid_dpop_proof", words)
            else:
                assert answer.status == 200, answer.body

    async def test_proof_with_a_private_key_or_no_signature(self) -> None:
        async with running() as h:
            claims = {"jti": "p-123456", "iat": int(h.clock.now()), "htm": "POST", "htu": h.token_endpoint}
            leaky = raw_jwt({"typ": "dpop+jwt", "jwk": rsa_key("client").as_dict(private=True)}, claims)
            assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
            refused(await h.post_token(form(assertion), leaky), "invalid_dpop_proof", "private key")
            forged = raw_jwt({"typ": "dpop+jwt", "jwk": rsa_key("other").as_dict(private=False)}, claims)
            assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
            refused(await h.post_token(form(assertion), forged), "invalid_dpop_proof", "signature")

    async def test_stale_proof(self) -> None:
        async with running() as h:
            nonce = h.fake.nonces.current()
            proof = dpop_proof(signing_key(), "POST", h.token_endpoint, nonce=nonce, now=h.clock.now() - 120)
            assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
            refused(await h.post_token(form(assertion), proof), "invalid_dpop_proof", "iat")

    async def test_scope_not_registered(self) -> None:
        async with running() as h:
            proof = dpop_proof(
                signing_key(), "POST", h.token_endpoint, nonce=h.fake.nonces.current(), now=h.clock.now()
            )
            assertion = client_assertion(signing_key(), CLIENT_ID, h.issuer, now=h.clock.now())
            refused(await h.post_token(form(assertion, scope="nhn:msh/api other"), proof), "invalid_scope", "scope")


def ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


async def api(
    h: Harness, token: str, proof: str | None, *, scheme: str = "DPoP", path: str = "/api/messages"
) -> Answer:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return await h.request("GET", h.api_url(path), headers=headers)


def denied(answer: Answer, error: str, words: str) -> None:
    """A resource server's refusal: 401, WWW-Authenticate DPoP with the error, an RFC 7807 body."""
    assert answer.status == 401, answer.body
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith("DPoP ") and f'error="{error}"' in challenge, challenge
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.body["status"] == 401 and answer.body["title"] == "Unauthorized"
    assert words in answer.body["detail"], answer.body


class TestApi:
    async def test_no_credentials(self) -> None:
        """No Authorization: a bare DPoP challenge (no error code, RFC 6750 §3.1)."""
        async with running() as h:
            answer = await h.request("GET", h.api_url())
            assert answer.status == 401
            assert "error=" not in answer.headers["WWW-Authenticate"]
            assert answer.headers["WWW-Authenticate"].startswith("DPoP algs=")

    async def test_bearer_instead_of_dpop(self) -> None:
        async with running() as h:
            client = h.client()
            headers = await client.headers("GET", h.api_url())
            token = headers["Authorization"].split(" ", 1)[1]
            denied(await api(h, token, headers["DPoP"], scheme="Bearer"), "invalid_token", "not Bearer")

    async def test_query_is_ignored_in_htu(self) -> None:
        """The proof names the URL without its query; the API compares it so."""
        async with running() as h:
            client = h.client()
            path = "/api/messages?ReceiverHerIds=8142519&MessagesToFetch=10"
            assert (await h.call(client, "GET", path)).status == 200

    async def test_method_and_url_mismatch(self) -> None:
        async with running() as h:
            client = h.client()
            token = await client.access_token()
            proof = dpop_proof(signing_key(), "POST", h.api_url(), access_token=token, now=h.clock.now())
            denied(await api(h, token, proof), "invalid_dpop_proof", "htm")
            proof = dpop_proof(signing_key(), "GET", h.api_url("/api/other"), access_token=token, now=h.clock.now())
            denied(await api(h, token, proof), "invalid_dpop_proof", "htu")
            proof = dpop_proof(signing_key(), "GET", h.api_url(), access_token=token, now=h.clock.now())
            query_in_htu = raw_jwt(
                {"typ": "dpop+jwt", "jwk": signing_key().public_jwk},
                {
                    "jti": "q-123456",
                    "iat": int(h.clock.now()),
                    "htm": "GET",
                    "htu": h.api_url() + "?a=1",
                    "ath": ath(token),
                },
            )
            denied(await api(h, token, query_in_htu, path="/api/messages?a=1"), "invalid_dpop_proof", "htu")
            assert (await api(h, token, proof)).status == 200

    async def test_missing_or_wrong_ath(self) -> None:
        async with running() as h:
            client = h.client()
            token = await client.access_token()
            without = dpop_proof(signing_key(), "GET", h.api_url(), now=h.clock.now())
            denied(await api(h, token, without), "invalid_dpop_proof", "ath is missing")
            other = dpop_proof(signing_key(), "GET", h.api_url(), access_token=token + "x", now=h.clock.now())
            denied(await api(h, token, other), "invalid_dpop_proof", "not the hash")

    async def test_proof_by_another_key_than_the_token_is_bound_to(self) -> None:
        """A stolen token with the thief's own (valid) proof: the proof's key is not cnf.jkt."""
        async with running() as h:
            token = await h.client().access_token()
            proof = dpop_proof(signing_key("other"), "GET", h.api_url(), access_token=token, now=h.clock.now())
            denied(await api(h, token, proof), "invalid_dpop_proof", "bound to")

    async def test_missing_proof_and_replayed_proof(self) -> None:
        async with running() as h:
            client = h.client()
            token = await client.access_token()
            denied(await api(h, token, None), "invalid_dpop_proof", "exactly one")
            proof = dpop_proof(signing_key(), "GET", h.api_url(), access_token=token, now=h.clock.now())
            assert (await api(h, token, proof)).status == 200
            denied(await api(h, token, proof), "invalid_dpop_proof", "replayed")

    async def test_expired_access_token(self) -> None:
        """Past exp (plus the small skew) the token is refused, however fresh its proof."""
        async with running(token_lifetime_s=300) as h:
            token = await h.client().access_token()
            h.clock.advance(300 + h.authorizer.skew_s + 1)
            proof = dpop_proof(signing_key(), "GET", h.api_url(), access_token=token, now=h.clock.now())
            denied(await api(h, token, proof), "invalid_token", "expired")

    async def test_forged_token(self) -> None:
        """A token with the right claims signed by someone else than the issuer."""
        async with running() as h:
            real = jwt.decode(await h.client().access_token(), h.fake.public_key, algorithms=["RS256"])
            forged = jwt.encode(real.header, real.claims, rsa_key("other"), algorithms=["RS256"])
            proof = dpop_proof(signing_key(), "GET", h.api_url(), access_token=forged, now=h.clock.now())
            denied(await api(h, forged, proof), "invalid_token", "signature")

    async def test_wrong_audience_and_scope(self) -> None:
        async with running(api_audience="nhn:other") as h:
            denied(await h.call(h.client()), "invalid_token", "audience")
        async with running(registered(scopes=frozenset({"nhn:other/api"}))) as h:  # a token for another API
            denied(await h.call(h.client(scope="nhn:other/api")), "invalid_token", "audience")
        async with running(registered(scopes=frozenset({"nhn:msh/other"}))) as h:  # the API's, another scope
            denied(await h.call(h.client(scope="nhn:msh/other")), "invalid_token", "scope")

    async def test_api_nonce_demanded_and_rotated(self) -> None:
        """A server that wants nonces: none → 401 use_dpop_nonce with DPoP-Nonce; a stale one likewise."""
        async with running(api_nonce=True) as h:
            client = h.client()
            answer = await h.call(client)
            denied(answer, "use_dpop_nonce", "nonce")
            assert h.authorizer.nonces is not None
            assert answer.headers["DPoP-Nonce"] == h.authorizer.nonces.current()
            client.note_nonce(h.api_url(), "not-the-nonce")
            denied(await h.call(client), "use_dpop_nonce", "nonce")

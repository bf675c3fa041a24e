"""The HelseID client against the fake HelseID and a DPoP-protected API, all real servers on loopback.

Time is a manual clock shared by the client, the fake HelseID and the API: expiry and refresh are proved
by moving it, never by waiting.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from adapters.helseid.client import nonce_challenge
from gateway.errors import AuthenticationRefused, TransportError
from tests.edi2.helseid_harness import CLIENT_ID, HER_IDS, registered, running, signing_key


class TestDiscovery:
    async def test_token_endpoint_found_once(self) -> None:
        """The token endpoint comes from the issuer's OpenID configuration, fetched once."""
        async with running() as h:
            client = h.client()
            assert await client.token_endpoint() == h.token_endpoint
            await client.access_token()
            client.invalidate()
            await client.access_token()
            assert h.fake.discovery_requests == 1

    async def test_another_issuer_is_a_config_error(self) -> None:
        """A discovery document naming another issuer than the one configured is not followed."""
        async with running(issuer="https://helseid-sts.test.nhn.no") as h:
            with pytest.raises(AuthenticationRefused, match="another issuer"):
                await h.client().access_token()

    async def test_no_openid_configuration(self) -> None:
        """helseid_url pointing somewhere without discovery is an operator's error, named as such."""
        async with running() as h:
            client = h.client(issuer=h.issuer + "/nowhere")
            with pytest.raises(AuthenticationRefused, match=r"No OpenID configuration .* \(HTTP 404\)"):
                await client.access_token()


class TestTokens:
    async def test_nonce_dance_with_a_fresh_assertion(self) -> None:
        """The first token request earns a nonce (400 use_dpop_nonce); the second, with the nonce and a new
        client assertion, gets a DPoP token the API takes. (The fake refuses a reused assertion jti -
        test_refusals proves it - so success here proves the retry's assertion was new.)"""
        async with running() as h:
            client = h.client()
            token = await client.access_token()
            assert (h.fake.token_requests, h.fake.tokens_issued) == (2, 1)
            answer = await h.call(client)
            assert answer.status == 200, answer.body
            assert answer.body == {"client_id": CLIENT_ID, "her_ids": sorted(HER_IDS)}
            assert token.count(".") == 2

    async def test_nonce_remembered_and_renewed(self) -> None:
        """The nonce is kept: the next token request needs one round trip. After HelseID rotated it twice
        (the old one no longer in grace), the client does the dance again."""
        async with running() as h:
            client = h.client()
            await client.access_token()
            client.invalidate()
            await client.access_token()
            assert h.fake.token_requests == 3
            h.fake.nonces.rotate()
            h.clock.advance(h.fake.nonces.grace_s + 1)
            client.invalidate()
            await client.access_token()
            assert (h.fake.token_requests, h.fake.tokens_issued) == (5, 3)

    async def test_one_token_for_many_calls(self) -> None:
        """The token is cached: twenty API calls, one token (two requests: the nonce dance)."""
        async with running() as h:
            client = h.client()
            for _ in range(20):
                assert (await h.call(client)).status == 200
            assert (h.fake.token_requests, h.fake.tokens_issued) == (2, 1)

    async def test_refreshed_before_expiry(self) -> None:
        """A 300 s token is used until 30 s before it expires, then replaced - while the old one still
        works, so no call ever carries an expired token."""
        async with running(token_lifetime_s=300) as h:
            client = h.client(refresh_margin_s=30)
            first = await client.access_token()
            h.clock.advance(269)
            assert await client.access_token() == first
            assert h.fake.tokens_issued == 1
            h.clock.advance(2)
            second = await client.access_token()
            assert second != first
            assert h.fake.tokens_issued == 2
            assert (await h.call(client)).status == 200

    async def test_short_lived_token_is_still_cached(self) -> None:
        """A token shorter-lived than the margin is kept for half its life, not fetched on every call."""
        async with running(token_lifetime_s=20) as h:
            client = h.client(refresh_margin_s=30)
            first = await client.access_token()
            h.clock.advance(9)
            assert await client.access_token() == first
            h.clock.advance(2)
            assert await client.access_token() != first

    async def test_invalidate_refreshes(self) -> None:
        """After a 401 the adapter invalidates: the next call gets a new token. Invalidating a token that
        was already replaced does not throw the new one away."""
        async with running() as h:
            client = h.client()
            first = await client.access_token()
            client.invalidate(first)
            second = await client.access_token()
            assert second != first
            client.invalidate(first)  # a late 401 for the old token
            assert await client.access_token() == second
            assert h.fake.tokens_issued == 2

    async def test_concurrent_callers_share_one_request(self) -> None:
        """Twenty callers at once wait for one token request, and all get the same token."""
        async with running() as h:
            client = h.client()
            tokens = await asyncio.gather(*(client.access_token() for _ in range(20)))
            assert len(set(tokens)) == 1
            assert (h.fake.token_requests, h.fake.tokens_issued) == (2, 1)

    async def test_rs256_key(self) -> None:
        """RS256 (as NAV's client signs) works as well as the default PS512."""
        async with running() as h:
            client = h.client(signing_key("client", "RS256"))
            assert (await h.call(client)).status == 200


class TestResourceNonce:
    async def test_api_nonce_round_trip(self) -> None:
        """An API that demands its own nonce answers 401 use_dpop_nonce + DPoP-Nonce; the client notes it
        and the next call, with the nonce in its proof, passes - without a new token."""
        async with running(api_nonce=True) as h:
            client = h.client()
            refused = await h.call(client)
            assert refused.status == 401
            nonce = nonce_challenge(refused.status, refused.headers)
            assert nonce is not None
            client.note_nonce(h.api_url(), nonce)
            assert (await h.call(client, "POST", "/api/messages/1/read")).status == 200
            assert h.fake.tokens_issued == 1

    def test_challenge_recognised_only_when_it_is_one(self) -> None:
        challenge = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "DPoP-Nonce": "n-1"}
        assert nonce_challenge(401, challenge) == "n-1"
        assert nonce_challenge(400, challenge) is None
        assert nonce_challenge(401, {"WWW-Authenticate": 'DPoP error="invalid_token"', "DPoP-Nonce": "n"}) is None
        assert nonce_challenge(401, {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"'}) is None


class TestFailures:
    @pytest.mark.parametrize("status", [503, 429])
    async def test_busy_helseid_is_retryable_with_retry_after(self, status: int) -> None:
        """5xx and 429 from the token endpoint: TransportError with HelseID's Retry-After; the next try
        succeeds."""
        async with running() as h:
            client = h.client()
            h.fake.fail_next(1, status=status, retry_after_s=7)
            with pytest.raises(TransportError) as caught:
                await client.access_token()
            assert caught.value.retryable
            assert caught.value.retry_after_s == 7
            assert (await h.call(client)).status == 200

    async def test_unreachable_helseid_is_retryable(self) -> None:
        """Nothing listening at the issuer: TransportError, the message waits."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        async with running() as h:
            with pytest.raises(TransportError, match="cannot be reached"):
                await h.client(issuer=f"http://127.0.0.1:{port}").access_token()

    async def test_wrong_key_is_refused_naming_what_to_check(self) -> None:
        """A key HelseID does not know for the client: AuthenticationRefused (retried: the messages wait for the
        fix) naming invalid_client and what to check."""
        async with running() as h:
            with pytest.raises(AuthenticationRefused, match=r"invalid_client.*key_file"):
                await h.client(signing_key("other")).access_token()

    async def test_scope_not_granted_is_a_config_error(self) -> None:
        async with running() as h:
            with pytest.raises(AuthenticationRefused, match="invalid_scope"):
                await h.client(scope="nhn:msh/admin").access_token()

    async def test_unknown_client_is_a_config_error(self) -> None:
        async with running(registered("someone-else")) as h:
            with pytest.raises(AuthenticationRefused, match="invalid_client"):
                await h.client().access_token()

    async def test_nonce_rotating_under_the_request_is_retryable(self) -> None:
        """HelseID asks for a nonce again right after it gave one (it rotated in between): the client does
        not loop, and it is not an operator's problem either - a TransportError, tried again later."""
        async with running(nonce_interval_s=0, nonce_grace_s=0) as h:
            with pytest.raises(TransportError, match="HTTP 400"):
                await h.client().access_token()
            assert h.fake.token_requests == 2

    async def test_a_failure_is_shared_and_not_kept(self) -> None:
        """Concurrent callers share a failed request's error; the next call tries again."""
        async with running() as h:
            client = h.client()
            h.fake.fail_next(1, status=502)
            results = await asyncio.gather(*(client.access_token() for _ in range(5)), return_exceptions=True)
            assert all(isinstance(r, TransportError) for r in results)
            assert h.fake.token_requests == 1
            assert isinstance(await client.access_token(), str)

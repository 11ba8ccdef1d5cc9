"""The issuer's key set: rotation, removal, a burst of unknown kids, an outage, and readiness.

Fetches are counted where they land, at the loopback IdP's JWKS endpoint; time moves only on the
fake clock shared by the IdP, the cache and the verifier (cache 300 s, cooldown 30 s, stale 600 s).
"""

from __future__ import annotations

import asyncio
import random

import anyio
import httpx
import pytest

from gateway.clock import FakeClock
from gateway.errors import InvalidToken
from gateway.identity import KeySetCache, TokenVerifier, keys_from_jwks, refusal_reason
from gateway.settings import OIDCSettings
from tests.support.idp import IdPKey, LoopbackIdP

pytestmark = pytest.mark.anyio


async def reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    return refusal_reason(caught.value)


# -- rotation ----------------------------------------------------------------------------------


async def test_new_key_accepted_after_rotation_once_the_cooldown_allows_a_refetch(
    idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock
) -> None:
    await verifier.verify(idp.token())
    assert idp.jwks_hits == 1
    idp.rotate()
    new_token = idp.token()
    # Within the cooldown of the last fetch an unknown kid does not reach the IdP.
    assert await reason(verifier, new_token) == "unknown_kid"
    assert idp.jwks_hits == 1
    clock.advance(30)
    assert (await verifier.verify(new_token)).subject
    assert idp.jwks_hits == 2


async def test_removed_key_refused_after_the_next_refresh(
    idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock
) -> None:
    old_kid = idp.signing_kid
    old_token = idp.token(exp=int(clock.now().timestamp()) + 3600)
    await verifier.verify(old_token)
    idp.rotate(drop=[old_kid])
    clock.advance(299)
    await verifier.verify(old_token)  # the cached set still holds it: no refresh is due yet
    assert idp.jwks_hits == 1
    clock.advance(1)
    assert await reason(verifier, old_token) == "unknown_kid"
    assert idp.jwks_hits == 2
    assert (await verifier.verify(idp.token())).subject


async def test_refresh_swaps_the_whole_set(idp: LoopbackIdP, keys: KeySetCache, clock: FakeClock) -> None:
    first = idp.signing_kid
    await keys.key(first)
    second = idp.rotate(drop=[first]).kid
    clock.advance(300)
    assert (await keys.key(second)).key_id == second
    with pytest.raises(InvalidToken):
        await keys.key(first)


# -- a burst of kids -----------------------------------------------------------------------------


async def test_burst_of_1000_random_kids_costs_one_fetch_per_cooldown(
    idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock
) -> None:
    await verifier.verify(idp.token())
    assert idp.jwks_hits == 1
    idp.rotate()  # a genuine new key: 100 tokens of the burst are signed with it
    stranger = IdPKey.generate("ES256")
    valid = [idp.token() for _ in range(100)]
    rng = random.Random(7)

    def random_kid_tokens(n: int) -> list[str]:
        return [idp.token(key=stranger, headers={"kid": f"{rng.getrandbits(64):016x}"}) for _ in range(n)]

    async def burst(tokens: list[str]) -> list[object]:
        return await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)

    clock.advance(30)
    tokens = random_kid_tokens(900) + valid
    rng.shuffle(tokens)
    results = await burst(tokens)
    assert idp.jwks_hits == 2  # exactly one fetch, shared by everyone who waited for it
    refusals = [r for r in results if isinstance(r, InvalidToken)]
    assert len(refusals) == 900
    assert {refusal_reason(r) for r in refusals} == {"unknown_kid"}
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 100

    clock.advance(29)  # same cooldown window: a second burst fetches nothing
    results = await burst(random_kid_tokens(1000))
    assert all(isinstance(r, InvalidToken) for r in results)
    assert idp.jwks_hits == 2

    clock.advance(1)  # next window: one more fetch, however many ask
    await burst(random_kid_tokens(1000))
    assert idp.jwks_hits == 3


async def test_fetching_does_not_hold_up_requests_with_cached_keys(
    idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock
) -> None:
    cached_token = idp.token()
    await verifier.verify(cached_token)
    idp.rotate()
    clock.advance(30)
    idp.gate.clear()  # the IdP now holds every request until released
    result: list[object] = []

    async def unknown_kid_request() -> None:
        result.append(await verifier.verify(idp.token()))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(unknown_kid_request)
        assert await anyio.to_thread.run_sync(idp.held.wait, 10), "the IdP never saw the refetch"
        # The refetch is in flight and stuck at the IdP; a token whose key is cached still verifies.
        assert (await verifier.verify(cached_token)).subject
        assert result == []
        idp.gate.set()
    assert len(result) == 1


async def test_routine_refresh_in_flight_does_not_hold_up_other_requests(
    idp: LoopbackIdP, verifier: TokenVerifier, clock: FakeClock
) -> None:
    await verifier.verify(idp.token())
    clock.advance(300)  # the set is due for its routine refresh
    idp.gate.clear()
    result: list[object] = []

    async def refreshing_request() -> None:
        result.append(await verifier.verify(idp.token()))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(refreshing_request)
        assert await anyio.to_thread.run_sync(idp.held.wait, 10), "the IdP never saw the refetch"
        # One request waits for the refresh; the others are served from the aged set meanwhile.
        for _ in range(3):
            assert (await verifier.verify(idp.token())).subject
        assert result == []
        idp.gate.set()
    assert len(result) == 1
    assert idp.jwks_hits == 2


# -- the IdP going away --------------------------------------------------------------------------


async def test_idp_outage_cached_keys_serve_for_the_stale_allowance_then_refused(
    idp: LoopbackIdP, verifier: TokenVerifier, keys: KeySetCache, clock: FakeClock
) -> None:
    await verifier.verify(idp.token())
    idp.available = False  # answers 503 from now on
    clock.advance(300)  # the set is due for refresh, which fails
    assert (await verifier.verify(idp.token())).subject
    assert keys.fetch_outcomes == {"ok": 1, "error": 1}
    clock.advance(599)  # the last second of the stale allowance
    assert (await verifier.verify(idp.token())).subject
    assert keys.ready()
    clock.advance(1)
    assert await reason(verifier, idp.token()) == "keys_unavailable"
    assert not keys.ready()

    idp.available = True  # back, but the last failed attempt was within the cooldown
    assert await reason(verifier, idp.token()) == "keys_unavailable"
    clock.advance(30)
    assert (await verifier.verify(idp.token())).subject
    assert keys.ready()


async def test_idp_unreachable_cached_keys_keep_serving(
    idp: LoopbackIdP, verifier: TokenVerifier, keys: KeySetCache, clock: FakeClock
) -> None:
    await verifier.verify(idp.token())
    idp.close()  # connection refused from now on
    clock.advance(600)
    assert (await verifier.verify(idp.token())).subject
    assert keys.fetch_outcomes["error"] == 1
    clock.advance(301)
    assert await reason(verifier, idp.token()) == "keys_unavailable"


async def test_failed_refresh_is_retried_once_per_cooldown(
    idp: LoopbackIdP, verifier: TokenVerifier, keys: KeySetCache, clock: FakeClock
) -> None:
    await verifier.verify(idp.token())
    idp.available = False
    clock.advance(300)
    for _ in range(50):
        await verifier.verify(idp.token())
    assert keys.fetch_outcomes["error"] == 1
    clock.advance(30)
    await verifier.verify(idp.token())
    assert keys.fetch_outcomes["error"] == 2


async def test_idp_down_at_start_refuses_with_keys_unavailable(
    idp: LoopbackIdP, verifier: TokenVerifier, keys: KeySetCache
) -> None:
    idp.available = False
    assert await reason(verifier, idp.token()) == "keys_unavailable"
    assert not keys.ready()


# -- where keys come from ------------------------------------------------------------------------


async def test_discovery_naming_another_issuer_is_not_trusted(
    idp: LoopbackIdP, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    # Same discovery URL, but the document names the issuer without the trailing slash.
    keys = KeySetCache(idp.issuer + "/", http=http, clock=clock)
    assert not await keys.warm()
    assert keys.fetch_outcomes == {"error": 1}


async def test_ready_and_warm_and_the_fetch_callback(
    idp: LoopbackIdP, oidc: OIDCSettings, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    outcomes: list[str] = []
    keys = KeySetCache.from_settings(oidc, http=http, clock=clock, on_fetch=outcomes.append)
    assert not keys.ready()
    assert await keys.warm()
    assert await keys.warm()  # fresh: no second fetch
    idp.available = False
    clock.advance(300)
    assert await keys.warm()  # refresh failed, stale keys still serve
    assert outcomes == ["ok", "error"]
    assert keys.fetch_count == 2
    assert idp.discovery_hits == 1  # the failed attempt got 503 at discovery


def test_only_asymmetric_signing_keys_with_a_kid_are_taken() -> None:
    rsa_key, ec_key = IdPKey.generate("RS256", "rsa"), IdPKey.generate("ES256", "ec")
    jwks = {
        "keys": [
            rsa_key.public_jwk,
            ec_key.public_jwk,
            {**IdPKey.generate("RS256", "enc").public_jwk, "use": "enc", "alg": "RSA-OAEP"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"},
            {k: v for k, v in IdPKey.generate("RS256").public_jwk.items() if k != "kid"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not an object",
        ]
    }
    assert sorted(keys_from_jwks(jwks)) == ["ec", "rsa"]
    assert keys_from_jwks({"keys": "nope"}) == {}

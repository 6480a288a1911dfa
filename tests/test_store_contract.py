"""The `StateStore` contract, run against both stores, plus `RedisWithLocalFallback` over a failing Redis.

- `MemoryStateStore`: expiry follows the injected fake clock (no sleeping);
- `RedisStateStore`: a real ``redis-server`` (tests/fakes/redis_server.py), a fresh key prefix per
  test; TTLs are checked with ``PTTL`` through ``store.client``, and one tiny (50 ms) expiry is
  waited for for real;
- `RedisWithLocalFallback`: a dedicated redis-server per test (killed and restarted there, so the shared
  session server is unaffected) and an injected monotonic clock for the retry interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from plugins.llm_fallback import MemoryStateStore, RedisStateStore, RedisWithLocalFallback, StateStore
from tests.conftest import FakeClock, http_error, wait_until
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.timeout(20)

STORE_LOGGER = "plugins.llm_fallback.stores"


# --- the two stores under one harness ---------------------------------------------------------------


@dataclass
class Case:
    """A store under test and how to make its time pass."""

    kind: str
    store: StateStore
    clock: FakeClock
    url: str | None = None

    @property
    def short_ttl(self) -> float:
        """A TTL this case can let run out quickly (50 ms real for Redis, fake seconds for memory)."""
        return 0.05 if self.kind == "redis" else 5.0

    async def let_expire(self, ttl: float) -> None:
        if self.kind == "redis":
            await asyncio.sleep(ttl + 0.05)
        else:
            self.clock.advance(ttl)

    async def pttl(self, key: str) -> int:
        assert isinstance(self.store, RedisStateStore)
        return int(await self.store.client.pttl(self.store.prefix + key))

    def sibling(self, prefix: str) -> StateStore:
        """Another store of the same kind, in another namespace (another bot on the same Redis)."""
        if self.kind == "redis":
            assert self.url is not None
            return RedisStateStore.from_url(self.url, prefix=prefix)
        return MemoryStateStore(self.clock)


@pytest.fixture(params=["memory", "redis"])
async def case(request, clock: FakeClock) -> AsyncIterator[Case]:
    if request.param == "memory":
        yield Case("memory", MemoryStateStore(clock), clock)
        return
    url = request.getfixturevalue("redis_url")
    store = RedisStateStore.from_url(url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    yield Case("redis", store, clock, url)
    await store.close()


# --- get / set / ttl ------------------------------------------------------------------------------------------


async def test_kind(case: Case):
    assert case.store.kind == case.kind


async def test_get_many_on_missing_keys(case: Case):
    assert await case.store.get_many(["nope", "cooldown:ollama"]) == [None, None]


async def test_get_many_keeps_order_and_round_trips_values(case: Case):
    value = '{"until": 1.5, "error": "ошибка ✅"}'
    assert await case.store.set("b", value, 60) is True
    assert await case.store.set("a", "1", 60) is True
    assert await case.store.get_many(["a", "missing", "b"]) == ["1", None, value]


async def test_get_many_of_no_key(case: Case):
    assert await case.store.get_many([]) == []


async def test_set_overwrites(case: Case):
    await case.store.set("k", "a", 60)
    await case.store.set("k", "b", 60)
    assert await case.store.get_many(["k"]) == ["b"]


async def test_value_expires_after_ttl(case: Case):
    ttl = case.short_ttl
    await case.store.set("k", "v", ttl)
    assert await case.store.get_many(["k"]) == ["v"]
    await case.let_expire(ttl)
    assert await case.store.get_many(["k"]) == [None]


async def test_ttl_is_honoured_in_seconds(case: Case):
    await case.store.set("k", "v", 30)
    if case.kind == "redis":
        assert 29_000 < await case.pttl("k") <= 30_000
        await case.store.set("short", "v", 0.25)  # sub-second TTLs keep their milliseconds
        assert 150 < await case.pttl("short") <= 250
    else:
        case.clock.advance(29.9)
        assert await case.store.get_many(["k"]) == ["v"]
        case.clock.advance(0.1)
        assert await case.store.get_many(["k"]) == [None]


# --- only_if_absent (SET NX) ------------------------------------------------------------------------------------


async def test_only_if_absent(case: Case):
    store = case.store
    assert await store.set("probe:ollama", "token-a", 60, only_if_absent=True) is True
    assert await store.set("probe:ollama", "token-b", 60, only_if_absent=True) is False
    assert await store.get_many(["probe:ollama"]) == ["token-a"]
    # A plain set still overwrites.
    assert await store.set("probe:ollama", "token-c", 60) is True
    assert await store.get_many(["probe:ollama"]) == ["token-c"]


async def test_only_if_absent_succeeds_again_once_the_key_expired(case: Case):
    ttl = case.short_ttl
    assert await case.store.set("lease", "a", ttl, only_if_absent=True) is True
    await case.let_expire(ttl)
    assert await case.store.set("lease", "b", 60, only_if_absent=True) is True
    assert await case.store.get_many(["lease"]) == ["b"]


async def test_only_if_absent_is_atomic_under_concurrency(case: Case):
    results = await asyncio.gather(*(case.store.set("lease", f"t{i}", 60, only_if_absent=True) for i in range(20)))
    assert results.count(True) == 1


# --- delete / delete_if_equal ------------------------------------------------------------------------------------


async def test_delete_counts_what_it_deleted(case: Case):
    await case.store.set("a", "1", 60)
    await case.store.set("b", "2", 60)
    await case.store.set("c", "3", 60)
    assert await case.store.delete("a", "missing", "c") == 2
    assert await case.store.get_many(["a", "b", "c"]) == [None, "2", None]
    assert await case.store.delete() == 0


async def test_delete_if_equal_deletes_only_on_equal_value(case: Case):
    store = case.store
    await store.set("cooldown:ollama", "record-1", 60)
    assert await store.delete_if_equal("cooldown:ollama", "record-0") is False
    assert await store.get_many(["cooldown:ollama"]) == ["record-1"]
    assert await store.delete_if_equal("cooldown:ollama", "record-1") is True
    assert await store.get_many(["cooldown:ollama"]) == [None]
    assert await store.delete_if_equal("cooldown:ollama", "record-1") is False
    assert await store.delete_if_equal("never-set", "x") is False


async def test_delete_if_equal_ignores_an_expired_value(case: Case):
    ttl = case.short_ttl
    await case.store.set("k", "v", ttl)
    await case.let_expire(ttl)
    assert await case.store.delete_if_equal("k", "v") is False


# --- clear ------------------------------------------------------------------------------------------------------------


async def test_clear_pattern_touches_only_matching_keys_of_this_namespace(case: Case):
    store = case.store
    other = case.sibling(f"other-{uuid.uuid4().hex[:8]}:")
    try:
        for key in ("cooldown:ollama", "cooldown:openai/g1", "probe:ollama", "preferred"):
            await store.set(key, "v", 60)
        await other.set("cooldown:ollama", "theirs", 60)

        assert await store.clear("cooldown:*") == 2

        assert await store.get_many(["cooldown:ollama", "cooldown:openai/g1", "probe:ollama", "preferred"]) == [
            None, None, "v", "v"]
        assert await other.get_many(["cooldown:ollama"]) == ["theirs"]

        assert await store.clear() == 2  # probe, preferred
        assert await store.get_many(["probe:ollama", "preferred"]) == [None, None]
        assert await other.get_many(["cooldown:ollama"]) == ["theirs"]
        assert await store.clear("nothing:*") == 0
    finally:
        await other.close()


async def test_clear_leaves_keys_outside_the_prefix_alone(redis_url):
    store = RedisStateStore.from_url(redis_url, prefix="llm:")
    try:
        await store.client.set("llmx:preferred", "not ours")
        await store.client.set("preferred", "not ours either")
        await store.set("preferred", "ours", 60)
        assert await store.clear() == 1
        assert await store.client.get("llmx:preferred") == "not ours"
        assert await store.client.get("preferred") == "not ours either"
    finally:
        await store.close()


# --- RedisWithLocalFallback over a Redis that goes away -----------------------------------------------------------------------


@dataclass
class LocalFallbackEnv:
    store: RedisWithLocalFallback
    redis: RedisStateStore
    monotonic: FakeClock
    clock: FakeClock


@pytest.fixture
async def local_fallback(own_redis: RedisServer, clock: FakeClock) -> AsyncIterator[LocalFallbackEnv]:
    redis = RedisStateStore.from_url(own_redis.url, prefix="llm:", timeout=0.3)
    monotonic = FakeClock(1000.0)
    store = RedisWithLocalFallback(redis, MemoryStateStore(clock), retry_interval=5.0, monotonic=monotonic)
    yield LocalFallbackEnv(store, redis, monotonic, clock)
    await store.close()


def _store_logs(caplog, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == STORE_LOGGER and r.levelno == level]


async def test_local_fallback_uses_redis_while_it_answers(local_fallback: LocalFallbackEnv):
    store = local_fallback.store
    assert store.kind == "redis"
    assert await store.set("preferred", "ollama", 60) is True
    assert await local_fallback.redis.client.get("llm:preferred") == "ollama"
    assert await store.get_many(["preferred"]) == ["ollama"]


async def test_local_fallback_serves_locally_while_redis_is_down_and_comes_back(local_fallback: LocalFallbackEnv, own_redis, caplog):
    caplog.set_level(logging.DEBUG)
    store = local_fallback.store
    await store.set("preferred", "ollama", 60)

    own_redis.kill()

    # Every operation still works, served from process memory.
    assert await store.get_many(["preferred", "cooldown:ollama"]) == [None, None]
    assert store.kind == "degraded"
    assert await store.set("cooldown:ollama", "rec", 300) is True
    assert await store.set("probe:ollama", "t1", 30, only_if_absent=True) is True
    assert await store.set("probe:ollama", "t2", 30, only_if_absent=True) is False
    assert await store.delete_if_equal("probe:ollama", "t1") is True
    assert await store.get_many(["cooldown:ollama"]) == ["rec"]

    # Retrying after the interval while Redis is still down: no new error line.
    local_fallback.monotonic.now += 5
    assert await store.get_many(["cooldown:ollama"]) == ["rec"]
    assert store.kind == "degraded"
    local_fallback.monotonic.now += 5
    assert await store.clear("probe:*") == 0
    errors = _store_logs(caplog, logging.ERROR)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "Redis state store unavailable" in errors[0].getMessage()

    # Redis is back; not tried again before the retry interval.
    own_redis.restart()
    local_fallback.monotonic.now += 1
    assert await store.get_many(["cooldown:ollama"]) == ["rec"]
    assert store.kind == "degraded"

    local_fallback.monotonic.now += 5
    assert await store.get_many(["cooldown:ollama"]) == [None]  # Redis again (restarted empty)
    assert store.kind == "redis"
    back = _store_logs(caplog, logging.WARNING)
    assert len(back) == 1 and "Redis state store is back" in back[0].getMessage()
    assert await store.set("preferred", "openai", 60) is True
    assert await local_fallback.redis.client.get("llm:preferred") == "openai"
    assert len(_store_logs(caplog, logging.ERROR)) == 1


async def test_local_fallback_logs_a_second_outage_again(local_fallback: LocalFallbackEnv, own_redis, caplog):
    caplog.set_level(logging.DEBUG)
    store = local_fallback.store
    for _ in range(2):
        own_redis.kill()
        await store.get_many(["x"])
        own_redis.restart()
        local_fallback.monotonic.now += 5
        await store.get_many(["x"])
        assert store.kind == "redis"
    assert len(_store_logs(caplog, logging.ERROR)) == 2
    assert len(_store_logs(caplog, logging.WARNING)) == 2


async def test_local_fallback_does_not_stall_on_a_hung_redis(local_fallback: LocalFallbackEnv, own_redis):
    store = local_fallback.store
    await store.set("k", "v", 60)
    own_redis.pause()
    try:
        started = time.monotonic()
        assert await store.get_many(["k"]) == [None]  # one socket timeout (0.3 s), then local
        for _ in range(20):
            await store.set("k", "local", 60)
            assert await store.get_many(["k"]) == ["local"]
        assert time.monotonic() - started < 2.0
        assert store.kind == "degraded"
    finally:
        own_redis.resume()


async def test_local_fallback_deletion_during_an_outage_does_not_come_back(local_fallback: LocalFallbackEnv, own_redis):
    store = local_fallback.store
    await store.set("forced", "openai", 600)
    own_redis.pause()  # a network partition: Redis keeps its data but does not answer
    try:
        assert await store.get_many(["x"]) == [None]  # times out: degraded, Redis left alone for a while
        assert store.kind == "degraded"
        await store.delete("forced")  # e.g. /llm_clear during the outage: never reaches Redis
        assert await store.get_many(["forced"]) == [None]
    finally:
        own_redis.resume()
    local_fallback.monotonic.now += 5
    assert await store.get_many(["forced"]) == [None]
    assert store.kind == "redis"


# --- the engine over a failing Redis ----------------------------------------------------------------------------------


async def test_engine_keeps_answering_when_redis_dies_mid_run(make_env, local_fallback: LocalFallbackEnv, own_redis, caplog):
    caplog.set_level(logging.DEBUG)
    env = make_env(store=local_fallback.store)
    assert await env.ask() == "ollama/m1"
    assert (await env.stats())["store"] == "redis"
    assert await local_fallback.redis.client.exists("llm:preferred") == 1

    # Redis dies while a request is in flight on ollama.
    in_flight = env.fakes.hold_next("ollama")
    request = asyncio.create_task(env.ask())
    await wait_until(lambda: env.fakes.count("ollama") == 2, interval=0.001)
    own_redis.kill()
    in_flight.set()
    assert await request == "ollama/m1"

    # Fallback and cooldown keep working from process-local state.
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    assert await env.ask() == "openai/g1"
    env.fakes.ok("ollama")
    for _ in range(5):
        env.clock.advance(10)
        assert await env.ask() == "openai/g1"
    stats = await env.stats()
    assert stats["store"] == "degraded"
    assert stats["provider_health"]["ollama"]["state"] == "cooling"
    assert env.fakes.count("ollama") == 3
    assert len(_store_logs(caplog, logging.ERROR)) == 1

    # Redis back: shared state resumes.
    own_redis.restart()
    local_fallback.monotonic.now += 5
    env.clock.advance(300)
    assert await env.ask() == "ollama/m1"
    assert (await env.stats())["store"] == "redis"


async def test_two_processes_share_health_through_redis(make_env, redis_url):
    first = make_env(store=RedisStateStore.from_url(redis_url, prefix="llm:"))
    second = make_env(store=RedisStateStore.from_url(redis_url, prefix="llm:"), fakes=first.fakes)
    try:
        first.fakes.fail("ollama", lambda: http_error(500, "m1"))
        assert await first.ask() == "openai/g1"
        first.fakes.ok("ollama")
        assert await second.ask() == "openai/g1"  # skipped: cooling in the shared store
        assert first.fakes.count("ollama") == 1
        assert (await second.health("ollama"))["state"] == "cooling"

        # Half-open: one probe across both processes.
        first.clock.advance(300)
        gate = first.fakes.gate("ollama")
        probe = asyncio.create_task(first.ask())
        await wait_until(lambda: first.fakes.count("ollama") == 2, rounds=1000, interval=0.001)
        assert await second.ask() == "openai/g1"
        assert first.fakes.count("ollama") == 2
        gate.set()
        assert await probe == "ollama/m1"
        assert await second.ask() == "ollama/m1"
        stats = await second.stats()
        assert stats["provider_health"]["ollama"]["state"] == "healthy"
        assert stats["store"] == "redis"
    finally:
        await first.store.close()
        await second.store.close()


async def test_replace_if_equal_writes_only_over_the_expected_value(case: Case):
    store = case.store
    await store.set("cooldown:ollama", "record-1", 60)
    assert await store.replace_if_equal("cooldown:ollama", "record-0", "record-2", 60) is False
    assert await store.get_many(["cooldown:ollama"]) == ["record-1"]
    assert await store.replace_if_equal("cooldown:ollama", "record-1", "record-2", 60) is True
    assert await store.get_many(["cooldown:ollama"]) == ["record-2"]
    assert await store.replace_if_equal("never-set", "x", "y", 60) is False
    assert await store.get_many(["never-set"]) == [None]


# --- add (a counter: the tokens a budget spent) --------------------------------------------------------------


async def test_add_counts_from_zero_and_is_atomic_under_concurrency(case: Case):
    assert await case.store.add("spent", 5, 60) == 5
    totals = await asyncio.gather(*(case.store.add("spent", 1, 60) for _ in range(50)))
    assert sorted(totals) == list(range(6, 56)), "every add counted once"
    assert await case.store.get_many(["spent"]) == ["55"]


async def test_add_keeps_the_expiry_of_the_first_add(case: Case):
    ttl = case.short_ttl
    await case.store.add("spent", 1, ttl)
    await case.store.add("spent", 1, 3600)  # later adds do not push the period's end back
    await case.let_expire(ttl)
    assert await case.store.get_many(["spent"]) == [None]
    assert await case.store.add("spent", 7, 60) == 7


async def test_local_fallback_adds_made_while_redis_is_away_reach_redis(local_fallback: LocalFallbackEnv, own_redis):
    store = local_fallback.store
    assert await store.add("spent", 10, 600) == 10
    own_redis.pause()
    try:
        await store.get_many(["x"])  # times out: degraded
        assert store.kind == "degraded"
        assert await store.add("spent", 3, 600) == 3  # counted locally meanwhile
    finally:
        own_redis.resume()
    local_fallback.monotonic.now += 5
    assert await store.get_many(["spent"]) == ["13"], "the add made during the outage reached Redis"
    assert store.kind == "redis"

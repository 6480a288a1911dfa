"""The fallback store around a Redis outage: race-free recovery, one log line each way, namespaces.

Real ``redis-server`` processes on loopback (paused with SIGSTOP, killed); time for the retry
interval comes from an injected monotonic clock, never from sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from luka_bot.core.config import ConfigError, load_settings
from luka_bot.services.state_stores import build_stores
from plugins.llm_fallback import RedisWithLocalFallback, MemoryStateStore, RedisStateStore
from tests.conftest import FakeClock, http_error
from tests.fakes.redis_server import RedisServer, free_port

pytestmark = pytest.mark.timeout(30)

STORE_LOGGER = "plugins.llm_fallback.stores"


@dataclass
class Outage:
    store: RedisWithLocalFallback
    other: Redis
    """Another process's view of the same Redis (raw keys)."""
    monotonic: FakeClock
    server: RedisServer

    async def go_down(self) -> None:
        """Redis stops answering and this process notices it (one socket timeout)."""
        self.server.pause()
        assert await self.store.get_many(["anything"]) == [None]
        assert self.store.kind == "degraded"

    def answer_again(self) -> None:
        """Redis answers again, but this process has not tried it yet (retry interval not over)."""
        self.server.resume()

    def retry_interval_passes(self) -> None:
        self.monotonic.now += 5


@pytest.fixture
async def outage(own_redis: RedisServer, clock: FakeClock) -> AsyncIterator[Outage]:
    monotonic = FakeClock(1000.0)
    store = RedisWithLocalFallback(RedisStateStore.from_url(own_redis.url, prefix="llm:", timeout=0.3),
                          MemoryStateStore(clock), retry_interval=5.0, monotonic=monotonic)
    other = Redis.from_url(own_redis.url, decode_responses=True)
    yield Outage(store, other, monotonic, own_redis)
    if own_redis.paused:
        own_redis.resume()
    await other.aclose()
    await store.close()


def _store_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == STORE_LOGGER and r.levelno == level]


# --- recovery with concurrent callers ----------------------------------------------------------------------


async def test_concurrent_callers_after_recovery_replay_each_deletion_once_and_never_raise(outage: Outage):
    store = outage.store
    await store.set("forced", "openai-until-x", 600)
    await store.set("cooldown:ollama", "rec-1", 600)
    await store.set("probe:ollama", "lease-1", 600)
    await outage.go_down()
    await store.delete("forced")
    await store.delete_if_equal("probe:ollama", "lease-1")  # a probe lease released during the outage
    await store.clear("cooldown:*")
    outage.answer_again()
    outage.retry_interval_passes()

    results = await asyncio.gather(*(store.get_many(["forced", "cooldown:ollama", "probe:ollama"])
                                     for _ in range(20)), return_exceptions=True)

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert all(r == [None, None, None] for r in results)
    assert store.kind == "redis"
    assert await outage.other.keys("llm:*") == []


async def test_a_probe_lease_released_during_the_outage_is_released_on_redis(outage: Outage):
    await outage.store.set("probe:ollama", "lease-1", 600, only_if_absent=True)
    await outage.go_down()
    assert await outage.store.delete_if_equal("probe:ollama", "lease-1") is True
    assert await outage.store.delete_if_equal("probe:ollama", "lease-0") is False
    outage.answer_again()
    outage.retry_interval_passes()
    assert await outage.store.set("probe:ollama", "lease-2", 600, only_if_absent=True) is True


async def test_replayed_deletions_keep_what_another_process_wrote_meanwhile(outage: Outage):
    store = outage.store
    await store.set("forced", "openai-until-x", 600)
    await store.set("cooldown:ollama", "rec-1", 600)
    assert await store.get_many(["forced", "cooldown:ollama"]) == ["openai-until-x", "rec-1"]
    await outage.go_down()
    outage.answer_again()
    # Another process, which can reach Redis, records fresh state meanwhile...
    await outage.other.set("llm:cooldown:ollama", "rec-2-other-process", px=600_000)
    await outage.other.set("llm:cooldown:openai", "rec-other-process", px=600_000)
    # ...while here an admin runs /llm_clear, still served locally.
    await store.delete("preferred", "forced")
    await store.clear("cooldown:*")
    outage.retry_interval_passes()

    assert await store.get_many(["forced", "cooldown:ollama", "cooldown:openai"]) == [
        None, "rec-2-other-process", "rec-other-process"]
    assert await outage.other.get("llm:forced") is None  # what this process saw and cleared is gone


async def test_a_failure_recorded_at_the_switch_to_local_state_is_kept(outage: Outage):
    store = outage.store
    await store.set("cooldown:ollama", "rec-1", 600)
    (seen,) = await store.get_many(["cooldown:ollama"])
    outage.server.pause()  # the conditional write itself meets the dead Redis
    assert await store.replace_if_equal("cooldown:ollama", seen, "rec-2", 600) is True
    assert store.kind == "degraded"
    assert await store.get_many(["cooldown:ollama"]) == ["rec-2"]
    assert await store.replace_if_equal("cooldown:ollama", "rec-1", "rec-3", 600) is False  # now local decides
    assert await store.replace_if_equal("cooldown:ollama", "rec-2", "rec-3", 600) is True


async def test_state_learned_during_the_outage_is_not_written_back(outage: Outage):
    """Documented: fallback state learned locally is forgotten when Redis returns (Redis is the truth)."""
    store = outage.store
    await outage.go_down()
    await store.set("cooldown:ollama", "learned-locally", 600)
    assert await store.get_many(["cooldown:ollama"]) == ["learned-locally"]
    outage.answer_again()
    outage.retry_interval_passes()
    assert await store.get_many(["cooldown:ollama"]) == [None]
    assert await outage.other.get("llm:cooldown:ollama") is None
    outage.server.pause()  # a second outage does not bring the first one's local state back
    outage.retry_interval_passes()
    assert await store.get_many(["cooldown:ollama"]) == [None]
    assert store.kind == "degraded"


async def test_one_error_line_and_one_warning_line_per_outage_without_traceback(outage: Outage, caplog):
    caplog.set_level(logging.DEBUG)
    store = outage.store
    outage.server.kill()
    results = await asyncio.gather(*(store.get_many(["k"]) for _ in range(50)),
                                   *(store.set("k", "v", 60) for _ in range(50)))
    assert results[:50] == [[None]] * 50 or all(r in ([None], ["v"]) for r in results[:50])
    outage.retry_interval_passes()
    await asyncio.gather(*(store.get_many(["k"]) for _ in range(20)))  # still down: no new line
    outage.server.restart()
    outage.retry_interval_passes()
    await asyncio.gather(*(store.get_many(["k"]) for _ in range(20)))
    assert store.kind == "redis"
    errors, warnings = _store_logs(caplog, logging.ERROR), _store_logs(caplog, logging.WARNING)
    assert len(errors) == 1 and "Redis state store unavailable" in errors[0].getMessage()
    assert len(warnings) == 1 and "Redis state store is back" in warnings[0].getMessage()
    assert all(r.exc_info is None for r in errors + warnings)


async def test_a_burst_on_a_hung_redis_with_a_small_pool_does_not_queue_behind_timeouts(own_redis: RedisServer):
    store = RedisWithLocalFallback(RedisStateStore.from_url(own_redis.url, prefix="llm:", timeout=0.3, max_connections=4))
    try:
        own_redis.pause()
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(*(store.get_many(["k"]) for _ in range(200)))
        # 200 callers, 4 connections, 0.3 s timeouts: queueing behind each timeout would take 15 s.
        assert loop.time() - started < 3.0
        assert results == [[None]] * 200
    finally:
        own_redis.resume()
        await store.close()


# --- namespaces -------------------------------------------------------------------------------------------------


def _settings(redis_url: str, token: str, **overrides: str):
    return load_settings(_env_file=None, BOT_TOKEN=token, REDIS_URL=redis_url, **overrides)


async def test_two_bots_on_one_redis_do_not_clear_each_other(redis_url: str):
    first = build_stores(_settings(redis_url, "111:first-token"))
    second = build_stores(_settings(redis_url, "222:second-token"))
    raw = Redis.from_url(redis_url, decode_responses=True)
    try:
        for stores in (first, second):
            await stores.fallback.set("cooldown:ollama", "rec", 600)
            await stores.fallback.set("alert:down:ollama", "1", 600)
            await stores.bot.set("thread:current:7", "t1", 600)
            await stores.bot.push_bounded("history:7:t1", "turn", max_len=5, ttl=600)

        assert await first.fallback.clear("*") == 2  # /llm_clear on the first bot

        assert sorted(await raw.keys("*")) == [
            "llm:222:alert:down:ollama", "llm:222:cooldown:ollama",
            "luka:111:history:7:t1", "luka:111:thread:current:7",
            "luka:222:history:7:t1", "luka:222:thread:current:7"]
    finally:
        await raw.aclose()
        await first.close()
        await second.close()


@pytest.mark.parametrize(("prefix", "neighbour"), [("te*t:", "test:"), ("x[ab]:", "xa:"), ("q?:", "qq:"),
                                                   ("b\\:", "b\\:")])
async def test_glob_characters_in_a_prefix_are_matched_literally(redis_url: str, prefix: str, neighbour: str):
    store = RedisStateStore.from_url(redis_url, prefix=prefix)
    raw = Redis.from_url(redis_url, decode_responses=True)
    try:
        await raw.set(neighbour + "theirs", "keep") if neighbour != prefix else None
        await store.set("ours", "v", 60)
        assert await store.clear("*") == 1
        assert await raw.get(prefix + "ours") is None
        if neighbour != prefix:
            assert await raw.get(neighbour + "theirs") == "keep"
    finally:
        await raw.aclose()
        await store.close()


def test_prefixes_default_to_the_bot_id_and_can_be_overridden():
    settings = load_settings(_env_file=None, BOT_TOKEN="123456:secret")
    assert settings.redis_prefixes() == ("llm:123456:", "luka:123456:")
    assert "secret" not in "".join(settings.redis_prefixes())
    settings = load_settings(_env_file=None, BOT_TOKEN="123456:secret", REDIS_PREFIX="llm:")
    assert settings.redis_prefixes() == ("llm:", "luka:123456:")
    settings = load_settings(_env_file=None, REDIS_PREFIX="a:", REDIS_BOT_PREFIX="b:")
    assert settings.redis_prefixes() == ("a:", "b:")
    with pytest.raises(ConfigError, match="must not overlap"):
        load_settings(_env_file=None, REDIS_PREFIX="bot:", REDIS_BOT_PREFIX="bot:luka:")


def test_sentinel_settings_are_parsed_and_checked():
    settings = load_settings(_env_file=None, REDIS_SENTINELS="127.0.0.1:26379, sentinel-2:26380",
                             REDIS_SENTINEL_MASTER="mymaster")
    assert settings.REDIS_SENTINELS == [("127.0.0.1", 26379), ("sentinel-2", 26380)]
    for bad in ({"REDIS_SENTINELS": "127.0.0.1:26379"}, {"REDIS_SENTINEL_MASTER": "mymaster"},
                {"REDIS_SENTINELS": "host-without-port", "REDIS_SENTINEL_MASTER": "m"},
                {"REDIS_SENTINELS": "h:99999", "REDIS_SENTINEL_MASTER": "m"},
                {"REDIS_URL": "localhost:6379"}):
        with pytest.raises(ConfigError, match="REDIS_"):
            load_settings(_env_file=None, **bad)
    assert load_settings(_env_file=None, REDIS_URL="rediss://cache.example:6380/0").REDIS_URL.startswith("rediss")


async def test_llm_clear_of_one_bot_leaves_the_other_bots_failover_state(redis_url: str, make_env):
    first_stores = build_stores(_settings(redis_url, "111:first-token"))
    second_stores = build_stores(_settings(redis_url, "222:second-token"))
    first = make_env(store=first_stores.fallback)
    second = make_env(store=second_stores.fallback, fakes=first.fakes)
    try:
        first.fakes.fail("ollama", lambda: http_error(500, "m1"))
        assert await first.ask() == "openai/g1"
        assert await second.ask() == "openai/g1"
        assert first.fakes.count("ollama") == 2  # each bot learned it on its own: separate namespaces
        await first.engine.clear_cache()
        assert (await first.health("ollama"))["state"] == "unknown"  # cleared: nothing is known any more
        assert (await second.health("ollama"))["state"] == "cooling"
    finally:
        await first_stores.close()
        await second_stores.close()


async def test_check_says_which_store_is_really_in_use(redis_url: str, caplog):
    caplog.set_level(logging.WARNING)
    healthy = build_stores(_settings(redis_url, "5:t"))
    refused = build_stores(_settings(f"redis://127.0.0.1:{free_port()}/0", "5:t"))
    memory = build_stores(load_settings(_env_file=None, BOT_TOKEN="5:t"))
    try:
        assert await healthy.check() == "redis"
        assert await refused.check() == "degraded"
        assert await memory.check() == "memory"
        errors = _store_logs(caplog, logging.ERROR)
        assert len(errors) == 1 and "Connection" in errors[0].getMessage() and errors[0].exc_info is None
    finally:
        for stores in (healthy, refused, memory):
            await stores.close()

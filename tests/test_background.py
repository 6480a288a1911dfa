"""Background checks: recovery probes of a cooling provider, readiness checks of an idle standby.

Each tick is `engine.background.run_once()` under the fake clock: no sleeping. Several engines on
one store are several bot processes; on real Redis too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from plugins.llm_fallback import HealthEvent, ProbeEvent, RedisStateStore, RedisWithLocalFallback
from plugins.llm_fallback.policy import STRIKES_TO_COOL, next_probe_gap

from .conftest import Env, http_error, refused

INTERVAL = 5.0


def probing_env(make_env: Callable[..., Env], **kwargs: object) -> Env:
    return make_env(recovery_probe_interval=INTERVAL, **kwargs)


def recorded(env: Env) -> list[object]:
    events: list[object] = []
    env.engine.add_listener(events.append)
    return events


async def knock_out_ollama(env: Env) -> None:
    env.fakes.fail("ollama", lambda: refused("m1"))
    assert await env.ask() == "openai/g1"
    assert (await env.health("ollama"))["state"] == "cooling"


# --- recovery probes ---------------------------------------------------------------------------------


async def test_a_cooling_provider_is_probed_on_schedule_and_back_within_one_interval(make_env):
    env = probing_env(make_env)
    events = recorded(env)
    await knock_out_ollama(env)
    assert env.fakes.count("ollama") == 1

    env.clock.advance(INTERVAL - 1)
    assert await env.engine.background.run_once() == []  # not due yet
    env.clock.advance(1)
    assert await env.engine.background.run_once() == ["recovery:ollama"]  # due: probed, still down
    assert env.fakes.count("ollama") == 2
    assert (await env.health("ollama"))["state"] == "cooling"
    assert (await env.health("ollama"))["next_probe_seconds"] == INTERVAL

    env.fakes.ok("ollama")  # the primary is back
    env.clock.advance(INTERVAL)
    assert await env.engine.background.run_once() == ["recovery:ollama"]
    health = await env.health("ollama")
    assert health["state"] == "healthy" and health["cooldown_seconds_left"] == 0
    assert await env.ask() == "ollama/m1", "back on the free primary at once, long before its 300 s cooldown ends"
    assert [e.kind for e in events if isinstance(e, HealthEvent)] == ["down", "recovered"]
    probes = [(e.provider, e.outcome) for e in events if isinstance(e, ProbeEvent)]
    assert probes == [("ollama", "connection"), ("ollama", "ok")]


async def test_a_cooldown_for_unusable_replies_is_not_ended_by_a_probe(make_env):
    """A provider that answers, but with nothing usable, answers a probe's one token as well: only a real request
    shows it fixed. Ended by a probe, its cooldown would flap (down, recovered, down) with every strike-out."""
    env = probing_env(make_env)
    events = recorded(env)
    env.fakes.bad_reply("ollama", "empty")
    for _ in range(STRIKES_TO_COOL):
        assert await env.ask() == "openai/g1"
    assert (await env.health("ollama"))["state"] == "cooling"

    for _ in range(20):  # 100 s of the 300 s cooldown
        env.clock.advance(INTERVAL)
        assert await env.engine.background.run_once() == []
        assert await env.ask() == "openai/g1"
    assert (await env.health("ollama"))["state"] == "cooling"
    assert [e.kind for e in events if isinstance(e, HealthEvent)] == ["down"]

    env.fakes.ok("ollama")
    env.clock.advance(300)  # the cooldown is over: the next request probes it (half-open)
    assert await env.ask() == "ollama/m1"
    assert [e.kind for e in events if isinstance(e, HealthEvent)] == ["down", "recovered"]


async def test_user_requests_never_probe_a_provider_the_probes_cover(make_env):
    env = probing_env(make_env)
    await knock_out_ollama(env)
    for _ in range(100):  # 500 s: far past the 300 s cooldown, probes on schedule all along
        env.clock.advance(INTERVAL)
        await env.engine.background.run_once()
        assert await env.ask() == "openai/g1"
    status = await env.engine.status()
    probes = env.fakes.count("ollama") - 1
    assert status.provider("ollama").state == "cooling"
    assert 0 < probes <= 100, probes
    assert env.fakes.log.count(("ollama", "m1")) == 1 + probes, "every request after the first reached only openai"


def test_the_probes_back_off_with_the_outage_up_to_a_bound() -> None:
    assert next_probe_gap(5, 0) == 5 and next_probe_gap(5, 49) == 5
    assert next_probe_gap(5, 200) == 20
    assert next_probe_gap(5, 3600) == 60  # 5 s × 12


async def test_probes_back_off_in_a_long_outage(make_env):
    env = probing_env(make_env)
    await knock_out_ollama(env)
    for _ in range(720):  # one hour, a tick every 5 s
        env.clock.advance(INTERVAL)
        await env.engine.background.run_once()
    probes = env.fakes.count("ollama") - 1
    assert 60 <= probes <= 130, f"{probes} probes in an hour (a fixed 5 s would be 720)"
    assert (await env.health("ollama"))["next_probe_seconds"] <= 60


async def test_probes_off_leaves_the_first_request_after_the_cooldown_to_probe(make_env):
    env = make_env()  # recovery_probe_interval=0
    await knock_out_ollama(env)
    assert env.engine.background.enabled is False
    env.clock.advance(301)
    assert await env.engine.background.run_once() == []
    env.fakes.ok("ollama")
    assert await env.ask() == "ollama/m1"  # the half-open probe is a user request, as before


async def test_a_dead_prober_stops_covering_and_users_probe_again(make_env):
    """The process holding the schedule was killed: once its schedule is stale, the half-open rules apply."""
    env = probing_env(make_env)
    await knock_out_ollama(env)
    env.clock.advance(301)  # nobody ran a probe: the schedule went stale long ago, the cooldown is over
    env.fakes.ok("ollama")
    assert await env.ask() == "ollama/m1"


async def test_one_prober_per_cluster_on_real_redis(make_env, redis_url):
    stores = [RedisWithLocalFallback(RedisStateStore.from_url(redis_url, prefix="bg-test:")) for _ in range(3)]
    await stores[0].clear("*")
    envs = [probing_env(make_env, store=stores[0])]
    envs += [probing_env(make_env, store=store, fakes=envs[0].fakes) for store in stores[1:]]
    try:
        await knock_out_ollama(envs[0])
        for round_ in range(1, 4):
            envs[0].clock.advance(INTERVAL)  # one clock for all: it is the same time in every process
            done = [await env.engine.background.run_once() for env in envs]
            assert sum(len(d) for d in done) == 1, done
            assert envs[0].fakes.count("ollama") == 1 + round_
        envs[0].fakes.ok("ollama")
        envs[0].clock.advance(INTERVAL)
        events = recorded(envs[2])
        for env in envs:
            await env.engine.background.run_once()
        for env in envs:  # cleared for every process, by one probe
            assert (await env.health("ollama"))["state"] == "healthy"
            assert await env.ask() == "ollama/m1"
    finally:
        for store in stores:
            await store.close()


async def test_a_killed_probers_lease_expires_and_another_process_takes_over(make_env):
    first = probing_env(make_env)
    second = probing_env(make_env, store=first.store, fakes=first.fakes)
    await knock_out_ollama(first)
    first.clock.advance(INTERVAL)
    lease = await first.engine.health.take_checker("ollama")  # the first process dies right after taking it
    assert lease is not None
    assert await second.engine.background.run_once() == []  # held: the other process keeps off
    first.clock.advance(40)  # the lease (timeout 30 s + 5 s) has expired
    assert await second.engine.background.run_once() == ["recovery:ollama"]


async def test_each_recovery_is_announced_once_whichever_process_saw_it(make_env):
    first = probing_env(make_env)
    second = probing_env(make_env, store=first.store, fakes=first.fakes)
    events = recorded(first)
    seen_second = recorded(second)
    await knock_out_ollama(first)
    first.fakes.ok("ollama")
    first.clock.advance(INTERVAL)
    await first.engine.background.run_once()
    await second.engine.background.run_once()
    assert await second.ask() == "ollama/m1"
    recoveries = [e for e in events + seen_second if isinstance(e, HealthEvent) and e.kind == "recovered"]
    assert len(recoveries) == 1


async def test_a_provider_that_cut_streams_is_not_recovered_by_a_short_call(make_env):
    env = probing_env(make_env)
    env.fakes.cut_stream("ollama", lambda: http_error(500, "m1"))
    with pytest.raises(Exception):  # noqa: PT011 - the cut reaches the caller (who restarts the reply)
        await env.ask_stream()
    assert (await env.health("ollama"))["last_error_kind"] == "stream_cut"
    for _ in range(62):  # past the 300 s cooldown; each probe streams, and still gets cut
        env.clock.advance(INTERVAL)
        await env.engine.background.run_once()
    assert env.fakes.count("ollama") > 10
    assert (await env.health("ollama"))["state"] == "cooling"
    assert await env.ask() == "openai/g1"  # covered by the probes: users do not try it
    env.fakes.ok("ollama")
    env.clock.advance(INTERVAL)
    await env.engine.background.run_once()
    assert (await env.health("ollama"))["state"] == "healthy"


# --- readiness checks of a standby -------------------------------------------------------------------


def standby_env(make_env: Callable[..., Env], **kwargs: object) -> Env:
    return make_env(standby_check_interval=3600, **kwargs)


async def test_the_standby_is_checked_within_a_minute_of_start_up_then_hourly(make_env):
    env = standby_env(make_env)
    assert (await env.health("openai"))["state"] == "unknown"
    env.clock.advance(29)
    assert await env.engine.background.run_once() == []
    env.clock.advance(1)
    assert await env.engine.background.run_once() == ["readiness:openai"]  # never the serving primary
    health = await env.health("openai")
    assert health["state"] == "healthy" and health["ready"] is True and health["ready_checked_seconds_ago"] == 0
    env.clock.advance(3599)
    assert await env.engine.background.run_once() == []
    env.clock.advance(1)
    assert await env.engine.background.run_once() == ["readiness:openai"]
    assert env.fakes.count("ollama") == 0


async def test_a_broken_standby_is_announced_once_and_never_cooled(make_env):
    env = standby_env(make_env)
    events = recorded(env)
    env.fakes.fail("openai", lambda: http_error(401, "g1", "Incorrect API key provided"))
    env.clock.advance(30)
    await env.engine.background.run_once()
    env.clock.advance(3600)
    await env.engine.background.run_once()
    failed = [e for e in events if isinstance(e, HealthEvent) and e.kind == "standby_failed"]
    assert len(failed) == 1
    assert failed[0].provider == "openai" and failed[0].setting == "OPENAI_API_KEY" and failed[0].serving == "ollama"
    health = await env.health("openai")
    assert health["ready"] is False and "Incorrect API key" in health["ready_error"]
    assert health["state"] != "cooling", "a readiness failure does not cool the standby for user traffic"

    env.fakes.ok("openai")
    env.clock.advance(3600)
    await env.engine.background.run_once()
    assert [e.kind for e in events if isinstance(e, HealthEvent)] == ["standby_failed", "standby_ready"]
    assert (await env.health("openai"))["ready"] is True


async def test_a_cooling_provider_gets_recovery_probes_not_readiness_checks(make_env):
    env = probing_env(make_env, standby_check_interval=3600)
    await knock_out_ollama(env)
    env.clock.advance(30)
    done = await env.engine.background.run_once()
    assert done == ["recovery:ollama"]  # openai serves now: it is not a standby

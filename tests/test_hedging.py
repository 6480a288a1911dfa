"""Hedged first token (LLM_HEDGE_DELAY): a slow provider gets the next one started beside it.

In-process fake providers; `gate()` makes a provider slow to its first event. The delays are
short real waits (0.05 s): hedging is about time.
"""

from __future__ import annotations

import asyncio

import pytest

from plugins.llm_fallback import AttemptEvent, HedgeEvent, HedgePolicy
from tests.conftest import Env, ResponsiveLoop, wait_until

pytestmark = pytest.mark.timeout(30)

DELAY = 0.05


def recorded(env: Env) -> list[object]:
    events: list[object] = []
    env.engine.add_listener(lambda e: events.append(e) if isinstance(e, AttemptEvent | HedgeEvent) else None)
    return events


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_slow_primary_is_hedged_and_the_fallback_wins(make_env, streamed):
    env = make_env(hedge_delay=DELAY, loop_lag=ResponsiveLoop())
    events = recorded(env)
    slow = env.fakes.gate("ollama")
    answer = await (env.ask_stream() if streamed else env.ask())
    assert answer == "openai/g1"
    assert env.fakes.count("ollama") == 1 and env.fakes.count("openai") == 1
    stats = await env.stats()
    assert stats["provider_health"]["ollama"]["state"] == "unknown", "a cancelled loser is not a failure"
    assert stats["provider_health"]["ollama"]["hedges_last_hour"] == 1
    outcomes = {(e.provider, e.outcome) for e in events if isinstance(e, AttemptEvent)}
    assert outcomes == {("ollama", "hedge_lost"), ("openai", "ok")}
    assert [(e.provider, e.to_provider) for e in events if isinstance(e, HedgeEvent)] == [("ollama", "openai")]
    slow.set()


async def test_the_primary_wins_when_it_answers_first_after_the_hedge(make_env):
    env = make_env(hedge_delay=DELAY, loop_lag=ResponsiveLoop())
    events = recorded(env)
    primary = env.fakes.gate("ollama")
    fallback = env.fakes.gate("openai")
    task = asyncio.create_task(env.ask())
    await wait_until(lambda: env.fakes.count("openai") == 1, interval=0.01)  # the hedge started
    primary.set()
    assert await task == "ollama/m1"
    assert {(e.provider, e.outcome) for e in events if isinstance(e, AttemptEvent)} == {
        ("ollama", "ok"), ("openai", "hedge_lost")}
    assert (await env.health("openai"))["state"] == "unknown"  # not blamed, never answered
    fallback.set()


async def test_no_hedge_to_a_cooling_provider(make_env):
    env = make_env(hedge_delay=DELAY, loop_lag=ResponsiveLoop())
    await env.engine.report_provider_failure("openai", Exception("down"))
    slow = env.fakes.gate("ollama")
    task = asyncio.create_task(env.ask())
    await asyncio.sleep(DELAY * 4)
    assert env.fakes.count("openai") == 0
    slow.set()
    assert await task == "ollama/m1"
    assert (await env.health("ollama"))["hedges_last_hour"] == 0


async def test_no_hedge_for_a_pinned_provider(make_env):
    from pydantic_ai import Agent

    from plugins.llm_fallback import LLMFallbackModel

    env = make_env(hedge_delay=DELAY, loop_lag=ResponsiveLoop())
    agent = Agent(LLMFallbackModel(env.engine, pinned="ollama"))
    slow = env.fakes.gate("ollama")
    task = asyncio.create_task(agent.run("hi"))
    await asyncio.sleep(DELAY * 4)
    assert env.fakes.count("openai") == 0
    slow.set()
    assert (await task).output == "ollama/m1"


async def test_a_failure_before_the_hedge_fails_over_as_usual(make_env):
    from tests.conftest import http_error

    env = make_env(hedge_delay=DELAY, loop_lag=ResponsiveLoop())
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    assert await env.ask() == "openai/g1"
    assert (await env.health("ollama"))["state"] == "cooling"
    assert (await env.health("ollama"))["hedges_last_hour"] == 0


def test_auto_delay_follows_a_shifting_latency():
    policy = HedgePolicy.from_setting("auto", min_delay=0.05, max_delay=10)
    assert policy.delay_for("ollama") == 10  # nothing seen yet: only extreme outliers hedge
    for _ in range(100):
        policy.observe("ollama", 0.1)
    assert policy.delay_for("ollama") == pytest.approx(0.3)
    for _ in range(200):  # the provider got slower for everyone: the window follows
        policy.observe("ollama", 1.0)
    assert policy.delay_for("ollama") == pytest.approx(3.0)
    assert policy.delay_for("openai") == 10  # per provider


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "soon"])
def test_bad_hedge_settings_are_refused(bad):
    with pytest.raises(ValueError):
        HedgePolicy.from_setting(bad)


def test_hedging_is_off_by_default():
    assert not HedgePolicy.from_setting(None).enabled and not HedgePolicy.from_setting("").enabled


async def test_a_provider_that_keeps_losing_hedges_without_a_token_is_cooled(make_env):
    """One lost hedge is not a failure; a hung primary that loses three in a row is a timeout."""

    env = make_env(hedge_delay=DELAY, loop_lag=ResponsiveLoop())
    hung = env.fakes.gate("ollama")
    for n in range(1, 3):
        assert await env.ask() == "openai/g1"
        assert (await env.health("ollama"))["state"] == "unknown", f"{n} lost hedge(s) are no failure"
    assert await env.ask() == "openai/g1"
    health = await env.health("ollama")
    assert health["state"] == "cooling" and health["last_error_kind"] == "timeout"
    calls = env.fakes.count("ollama")
    assert await env.ask() == "openai/g1"
    assert env.fakes.count("ollama") == calls, "cooling: no more waiting the hedge delay for it"
    hung.set()


async def test_a_success_resets_the_lost_hedges(make_env):

    env = make_env(hedge_delay=DELAY, loop_lag=ResponsiveLoop())
    for _ in range(3):
        slow = env.fakes.gate("ollama")
        assert await env.ask() == "openai/g1"
        slow.set()
        env.fakes.ungate("ollama")
        assert await env.ask() == "ollama/m1"  # a real answer in between
    assert (await env.health("ollama"))["state"] == "healthy"


class LaggingLoop:
    """A loop-lag monitor that always sees our own loop as the slow one."""

    def begin(self) -> float:
        return 0.0

    def end(self) -> None:
        pass

    def excuses(self, mark: float, elapsed: float) -> bool:
        return True

    def stop(self) -> None:
        pass


async def test_no_hedge_while_this_process_loop_is_what_lags(make_env):
    env = make_env(hedge_delay=DELAY, loop_lag=LaggingLoop())
    slow = env.fakes.gate("ollama")
    task = asyncio.create_task(env.ask())
    await asyncio.sleep(DELAY * 4)
    assert env.fakes.count("openai") == 0, "a hedge would only double the load on a busy process"
    slow.set()
    assert await task == "ollama/m1"

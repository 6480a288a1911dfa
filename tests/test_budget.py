"""Token budgets of a paid provider: counted from the answers' usage, shared, skipped once spent, renewed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from plugins.llm_fallback import AllProvidersFailedError, HealthEvent
from plugins.llm_fallback.budget import Budgets, Period

from .conftest import FakeClock, refused

NOON = datetime(2026, 12, 6, 12, tzinfo=UTC).timestamp()


async def cost_of_one_answer(make_env) -> int:
    env = make_env()
    env.fakes.fail("ollama", lambda: refused("m1"))
    await env.ask()
    tokens = (await env.engine.status()).provider("openai").spent
    assert tokens is None  # no budget: nothing counted
    result_env = make_env(budgets=Budgets({"openai": 10**9}))
    result_env.fakes.fail("ollama", lambda: refused("m1"))
    await result_env.ask()
    return (await result_env.engine.status()).provider("openai").spent


@pytest.fixture
def noon(clock: FakeClock) -> FakeClock:
    clock.now = NOON
    return clock


async def test_a_spent_budget_skips_the_provider_from_the_next_request_and_alerts_once(make_env, noon):
    per_answer = await cost_of_one_answer(make_env)
    assert per_answer > 0
    env = make_env(budgets=Budgets({"openai": per_answer * 5}))
    events: list[object] = []
    env.engine.add_listener(events.append)
    env.fakes.fail("ollama", lambda: refused("m1"))  # the free primary is down: every answer is paid

    for _ in range(5):
        assert await env.ask() == "openai/g1"
    status = (await env.engine.status()).provider("openai")
    assert status.state == "budget" and status.spent == per_answer * 5 and status.budget_period == "2026-12-06"
    calls = env.fakes.count("openai")
    with pytest.raises(AllProvidersFailedError):  # the user gets the apology
        await env.ask()
    assert env.fakes.count("openai") == calls, "not one more paid call"
    budget_events = [(e.share, e.spent) for e in events if isinstance(e, HealthEvent) and e.kind == "budget"]
    assert budget_events == [(0.8, per_answer * 4), (1.0, per_answer * 5)]


async def test_the_budget_renews_at_midnight_of_its_time_zone(make_env, noon):
    per_answer = await cost_of_one_answer(make_env)
    budgets = Budgets({"openai": per_answer}, Period.DAY, ZoneInfo("Europe/Berlin"))
    env = make_env(budgets=budgets)
    env.fakes.fail("ollama", lambda: refused("m1"))
    assert await env.ask() == "openai/g1"
    with pytest.raises(AllProvidersFailedError):
        await env.ask()
    noon.now = datetime(2026, 12, 6, 22, 59, tzinfo=UTC).timestamp()  # 23:59 in Berlin: still the 6th there
    with pytest.raises(AllProvidersFailedError):
        await env.ask()
    noon.now = datetime(2026, 12, 6, 23, 0, 1, tzinfo=UTC).timestamp()  # 00:00 in Berlin, the 7th
    assert await env.ask() == "openai/g1"
    assert (await env.engine.status()).provider("openai").budget_period == "2026-12-07"


def test_periods_by_day_and_month() -> None:
    day, month = Budgets({"x": 1}), Budgets({"x": 1}, Period.MONTH)
    t = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    assert day.period_of(t) == "2026-12-31" and month.period_of(t) == "2026-12"
    assert day.ends_at(t) == datetime(2027, 1, 1, tzinfo=UTC).timestamp() == month.ends_at(t)
    with pytest.raises(ValueError):
        Budgets({"x": 0})


async def test_two_processes_count_into_one_budget(make_env, noon):
    per_answer = await cost_of_one_answer(make_env)
    first = make_env(budgets=Budgets({"openai": per_answer * 2}))
    second = make_env(budgets=Budgets({"openai": per_answer * 2}), store=first.store, fakes=first.fakes)
    first.fakes.fail("ollama", lambda: refused("m1"))
    assert await first.ask() == "openai/g1"
    assert await second.ask() == "openai/g1"
    with pytest.raises(AllProvidersFailedError):
        await first.ask()
    with pytest.raises(AllProvidersFailedError):
        await second.ask()


async def test_an_admins_force_overrides_a_spent_budget_and_says_so(make_env, noon, caplog):
    per_answer = await cost_of_one_answer(make_env)
    env = make_env(budgets=Budgets({"openai": per_answer}))
    env.fakes.fail("ollama", lambda: refused("m1"))
    assert await env.ask() == "openai/g1"
    with caplog.at_level(logging.WARNING, logger="llm_fallback"):
        await env.engine.force_provider("openai", 600)
    assert any("forced although its token budget" in r.getMessage() for r in caplog.records)
    assert await env.ask() == "openai/g1"


async def test_a_free_provider_without_a_budget_is_never_counted_or_skipped(make_env, noon):
    env = make_env(budgets=Budgets({"openai": 1}))
    for _ in range(3):
        assert await env.ask() == "ollama/m1"
    assert (await env.engine.status()).provider("ollama").spent is None


def test_budgets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from luka_bot.core.config import ConfigError, load_settings

    monkeypatch.setenv("LLM_TOKEN_BUDGETS", '{"openai": 2000000}')
    monkeypatch.setenv("LLM_BUDGET_PERIOD", "Month")
    monkeypatch.setenv("LLM_BUDGET_TIMEZONE", "Europe/Berlin")
    budgets = load_settings(_env_file=None).budgets()
    assert budgets.limits == {"openai": 2000000} and budgets.period is Period.MONTH
    assert str(budgets.zone) == "Europe/Berlin"
    monkeypatch.setenv("LLM_TOKEN_BUDGETS", '{"openai": -1}')
    with pytest.raises(ConfigError, match="LLM_TOKEN_BUDGETS"):
        load_settings(_env_file=None)

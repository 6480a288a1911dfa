"""The fallback state machine, step by step, with a fake clock and in-process fake providers.

In the spirit of resilience4j's ``CircuitBreakerStateMachineTest``: no sleeps, time moves only by
``clock.advance()``, and every step asserts what a user or operator would notice — which
provider answered (each fake answers ``"<provider>/<model>"``), how many calls each fake got,
and what ``get_provider_stats()`` reports.

Providers (tests/conftest.py): ``ollama`` (model m1) is the primary, ``openai`` (g1, g2) the
fallback; failure cooldown 300 s, preferred TTL 1800 s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from pydantic_ai import Agent
from pydantic_ai.exceptions import (
    ContentFilterError,
    ModelConnectionError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelRequestRejectedError,
)

from plugins.llm_fallback import (
    AllProvidersFailedError,
    LLMFallbackModel,
    FailureKind,
    HealthEvent,
    LLMProviderFallback,
    MemoryStateStore,
    ProviderSpec,
)
from tests.conftest import OPENAI_KEY, Env, FakeProviders, http_error, provider_specs, refused, wait_until

pytestmark = pytest.mark.timeout(20)


def server_error(model: str = "m1") -> Callable[[], ModelHTTPError]:
    return lambda: http_error(500, model)


async def fail_primary_once(env: Env) -> None:
    """ollama answers 500 once: the request is served by openai, ollama cools down."""
    env.fakes.fail("ollama", server_error())
    assert await env.ask() == "openai/g1"
    env.fakes.ok("ollama")


# --- closed: healthy primary -------------------------------------------------------------------


async def test_healthy_primary_answers_and_becomes_preferred(make_env):
    env = make_env()
    stats = await env.stats()
    assert stats["primary_provider"] == "ollama"
    assert stats["fallback_provider"] == "openai"
    assert stats["provider_order"] == ["ollama", "openai"]
    assert stats["preferred_provider"] is None
    assert stats["store"] == "memory"

    assert await env.ask() == "ollama/m1"

    assert env.fakes.count("ollama") == 1
    assert env.fakes.count("openai") == 0
    stats = await env.stats()
    assert stats["preferred_provider"] == "ollama"
    for provider, state in (("ollama", "healthy"), ("openai", "unknown")):  # openai was never tried
        health = stats["provider_health"][provider]
        assert health["state"] == state
        assert health["healthy"] is True and health["available"] is True  # the seed's "healthy": not marked failed
        assert health["cooldown_seconds_left"] == 0
        assert health["failures"] == 0
        assert health["last_error"] is None
    assert await env.engine.get_working_provider() == "ollama"


# --- open: primary fails -------------------------------------------------------------------------


async def test_primary_failure_fails_over_in_the_same_request_and_cools_down(make_env):
    env = make_env()
    env.fakes.fail("ollama", server_error())

    assert await env.ask() == "openai/g1"

    assert env.fakes.count("ollama") == 1
    assert env.fakes.count("openai", "g1") == 1
    health = await env.health("ollama")
    assert health["state"] == "cooling"
    assert health["healthy"] is False and health["available"] is False
    assert 299 <= health["cooldown_seconds_left"] <= 300
    assert health["failures"] == 1
    assert "500" in health["last_error"]
    assert health["last_error_kind"] == FailureKind.SERVER.value
    assert (await env.stats())["preferred_provider"] == "openai"
    assert await env.engine.get_working_provider() == "openai"

    # The next 10 requests (over 100 s, still inside the cooldown) never call the primary.
    for _ in range(10):
        env.clock.advance(10)
        assert await env.ask() == "openai/g1"
    assert env.fakes.count("ollama") == 1
    assert env.fakes.count("openai", "g1") == 11
    health = await env.health("ollama")
    assert health["state"] == "cooling"
    assert 199 <= health["cooldown_seconds_left"] <= 200


async def test_connection_refused_cools_down_like_a_server_error(make_env):
    env = make_env()
    env.fakes.fail("ollama", lambda: refused("m1"))
    assert await env.ask() == "openai/g1"
    health = await env.health("ollama")
    assert health["state"] == "cooling"
    assert health["last_error_kind"] == FailureKind.CONNECTION.value
    assert "Connection refused" in health["last_error"]


async def test_rate_limit_cools_down_for_retry_after(make_env):
    env = make_env()
    env.fakes.fail("ollama", lambda: http_error(429, "m1", headers={"retry-after": "42"}))
    assert await env.ask() == "openai/g1"
    health = await env.health("ollama")
    assert health["state"] == "cooling"
    assert health["last_error_kind"] == FailureKind.RATE_LIMITED.value
    assert 41 <= health["cooldown_seconds_left"] <= 42

    env.fakes.ok("ollama")
    env.clock.advance(41)
    assert await env.ask() == "openai/g1"
    env.clock.advance(1)
    assert await env.ask() == "ollama/m1"


async def test_rate_limit_retry_after_is_bounded(make_env):
    env = make_env()
    env.fakes.fail("ollama", lambda: http_error(429, "m1", headers={"retry-after": "999999"}))
    assert await env.ask() == "openai/g1"
    assert (await env.health("ollama"))["cooldown_seconds_left"] == 3600


# --- half-open: cooldown expired -----------------------------------------------------------------


async def test_recovered_primary_is_used_again_after_cooldown(make_env):
    env = make_env()
    await fail_primary_once(env)
    assert (await env.stats())["preferred_provider"] == "openai"

    env.clock.advance(299)
    assert await env.ask() == "openai/g1"
    assert env.fakes.count("ollama") == 1

    env.clock.advance(1)  # cooldown over: half-open
    health = await env.health("ollama")
    assert health["state"] == "half_open"
    assert health["available"] is True
    assert health["cooldown_seconds_left"] == 0
    assert await env.engine.get_working_provider() == "ollama"

    # Preferred is still openai (30-min TTL), yet the next request probes the primary.
    assert (await env.stats())["preferred_provider"] == "openai"
    assert await env.ask() == "ollama/m1"
    assert env.fakes.count("ollama") == 2

    stats = await env.stats()
    assert stats["preferred_provider"] == "ollama"
    health = stats["provider_health"]["ollama"]
    assert health["state"] == "healthy"
    assert health["healthy"] is True
    assert health["cooldown_seconds_left"] == 0
    assert health["failures"] == 0
    # The last error stays visible as history.
    assert "500" in health["last_error"]
    assert health["last_error_seconds_ago"] == 300

    # And it stays on the primary.
    assert [await env.ask() for _ in range(3)] == ["ollama/m1"] * 3


async def test_failed_probe_cools_down_again_and_fallback_answers(make_env):
    env = make_env()
    await fail_primary_once(env)
    env.clock.advance(300)

    env.fakes.fail("ollama", lambda: refused("m1"))
    assert await env.ask() == "openai/g1"

    assert env.fakes.count("ollama") == 2
    health = await env.health("ollama")
    assert health["state"] == "cooling"
    # A failed probe grows the cooldown (×2), as Envoy multiplies ejection time by the ejection count.
    assert 599 <= health["cooldown_seconds_left"] <= 600
    assert health["cooldown_multiplier"] == 2
    assert health["failures"] == 2
    assert health["last_error_kind"] == FailureKind.CONNECTION.value
    assert (await env.stats())["preferred_provider"] == "openai"

    env.clock.advance(100)
    assert await env.ask() == "openai/g1"
    assert env.fakes.count("ollama") == 2


async def test_half_open_lets_exactly_one_request_probe(make_env):
    env = make_env()
    await fail_primary_once(env)
    env.clock.advance(300)
    env.fakes.reset_counts()
    slow = env.fakes.gate("ollama")  # recovering, but slow

    tasks = [asyncio.create_task(env.ask(f"q{i}")) for i in range(50)]
    await wait_until(lambda: sum(t.done() for t in tasks) == 49)

    assert env.fakes.count("ollama") == 1
    finished = [t.result() for t in tasks if t.done()]
    assert finished == ["openai/g1"] * 49
    assert env.fakes.count("openai") == 49
    assert (await env.health("ollama"))["state"] == "half_open"

    slow.set()
    results = await asyncio.gather(*tasks)
    assert results.count("ollama/m1") == 1
    assert results.count("openai/g1") == 49
    assert env.fakes.count("ollama") == 1

    stats = await env.stats()
    assert stats["provider_health"]["ollama"]["state"] == "healthy"
    assert stats["preferred_provider"] == "ollama"
    env.fakes.ungate("ollama")
    assert await env.ask() == "ollama/m1"


async def test_probe_lease_is_free_again_after_the_probe_fails(make_env):
    env = make_env()
    await fail_primary_once(env)
    env.clock.advance(300)
    env.fakes.fail("ollama", server_error())
    assert await env.ask() == "openai/g1"  # the probe failed (the cooldown doubles)
    env.clock.advance(600)
    env.fakes.ok("ollama")
    assert await env.ask() == "ollama/m1"  # a new probe, not blocked by the old lease


async def test_a_missing_model_during_a_probe_keeps_the_probe_single(clock):
    """Three providers. openai is half-open; the probing request finds g1 missing and moves on to
    g2 (slow): another request meanwhile must not probe openai as well (backup serves it)."""
    fakes = FakeProviders()
    specs = [*provider_specs(), ProviderSpec("backup", "openai", "http://127.0.0.1:9/v1", ("b1",))]
    models = {**fakes.models(), "backup": {"b1": fakes.model("backup", "b1")}}
    engine = LLMProviderFallback(specs, MemoryStateStore(clock), clock=clock, models=models)
    agent = Agent(LLMFallbackModel(engine))

    await engine.report_provider_failure("openai", Exception("Connection timeout"))
    clock.advance(300)  # openai half-open
    await engine.report_provider_failure("ollama", Exception("Connection timeout"))  # ollama cooling
    fakes.fail("openai", lambda: http_error(404, "g1"), "g1")
    slow_g2 = fakes.gate("openai", "g2")

    probe = asyncio.create_task(agent.run("A"))
    await wait_until(lambda: fakes.count("openai", "g2") == 1)
    other = asyncio.create_task(agent.run("B"))
    await wait_until(lambda: other.done() or fakes.count("openai", "g2") == 2)
    try:
        assert fakes.count("openai", "g2") == 1  # B did not probe openai as well
        assert (await other).output == "backup/b1"
    finally:
        slow_g2.set()
        await asyncio.gather(probe, other, return_exceptions=True)
    assert (await probe).output == "openai/g2"


async def test_health_events_for_operators(make_env):
    env = make_env()
    events = []
    env.engine.add_listener(lambda e: events.append(e) if isinstance(e, HealthEvent) else None)

    await fail_primary_once(env)
    for _ in range(5):
        env.clock.advance(10)
        await env.ask()
    assert [(e.kind, e.provider) for e in events] == [("down", "ollama")]
    assert events[0].cooldown == 300

    env.clock.advance(300)
    assert await env.ask() == "ollama/m1"
    assert [(e.kind, e.provider) for e in events] == [("down", "ollama"), ("recovered", "ollama")]

    env.fakes.fail("ollama", server_error())
    env.fakes.fail("openai", server_error("g1"))
    with pytest.raises(AllProvidersFailedError):
        await env.ask()
    assert events[-1].kind == "all_failed"
    assert [(a.provider, a.model) for a in events[-1].attempts] == [("ollama", "m1"), ("openai", "g1")]


async def test_a_failing_listener_never_breaks_a_request(make_env):
    env = make_env()

    def broken(event):
        raise RuntimeError("alert channel down")

    env.engine.add_listener(broken)
    env.fakes.fail("ollama", server_error())
    assert await env.ask() == "openai/g1"


# --- preferred provider ----------------------------------------------------------------------------


async def test_preferred_provider_expires_after_ttl_without_traffic(make_env):
    env = make_env()
    assert await env.ask() == "ollama/m1"
    env.clock.advance(1799)
    assert (await env.stats())["preferred_provider"] == "ollama"
    env.clock.advance(1)
    assert (await env.stats())["preferred_provider"] is None


async def test_traffic_keeps_the_preferred_provider_alive(make_env):
    env = make_env()
    for _ in range(6):  # one request every 10 minutes for an hour
        assert await env.ask() == "ollama/m1"
        env.clock.advance(600)
    assert (await env.stats())["preferred_provider"] == "ollama"


# --- force -------------------------------------------------------------------------------------------


async def test_force_provider_puts_it_first_with_others_behind_it(make_env):
    env = make_env()
    until = await env.engine.force_provider("openai", 600)
    assert until == env.clock.now + 600

    stats = await env.stats()
    assert stats["forced_provider"] == "openai"
    assert stats["forced_seconds_left"] == 600
    assert await env.engine.get_working_provider() == "openai"

    # ollama is healthy, still openai answers.
    assert await env.ask() == "openai/g1"
    assert env.fakes.count("ollama") == 0

    # The forced provider fails: the request is still answered, by ollama.
    env.fakes.fail("openai", server_error("g1"))
    env.clock.advance(60)
    assert await env.ask() == "ollama/m1"
    assert env.fakes.count("openai", "g1") == 2
    assert (await env.health("openai"))["state"] == "cooling"

    # Forced means first whatever its health: it is tried again while cooling.
    env.fakes.ok("openai")
    env.clock.advance(60)
    assert await env.ask() == "openai/g1"
    assert env.fakes.count("openai", "g1") == 3
    assert (await env.stats())["forced_seconds_left"] == 480

    env.clock.advance(480)  # force over
    stats = await env.stats()
    assert stats["forced_provider"] is None
    assert stats["forced_seconds_left"] is None
    assert await env.ask() == "ollama/m1"
    assert await env.engine.get_working_provider() == "ollama"


@pytest.mark.parametrize(
    ("provider", "duration"),
    [("anthropic", 600), ("openai", 0), ("openai", -5), ("openai", 24 * 3600 + 1), ("ollama", 10**9)],
)
async def test_invalid_force_raises_and_changes_nothing(make_env, provider, duration):
    env = make_env()
    before = await env.stats()
    with pytest.raises(ValueError):
        await env.engine.force_provider(provider, duration)
    assert await env.stats() == before
    assert (await env.stats())["forced_provider"] is None
    assert await env.ask() == "ollama/m1"


async def test_force_for_a_full_day_is_accepted(make_env):
    env = make_env()
    await env.engine.force_provider("openai", 24 * 3600)
    assert (await env.stats())["forced_seconds_left"] == 24 * 3600


# --- clear ---------------------------------------------------------------------------------------------


async def test_clear_cache_forgets_preferred_cooldowns_and_force(make_env):
    env = make_env()
    env.fakes.fail("ollama", server_error())
    env.fakes.fail("openai", lambda: http_error(404, "g1"), "g1")
    assert await env.ask() == "openai/g2"
    await env.engine.force_provider("openai", 600)
    stats = await env.stats()
    assert stats["preferred_provider"] == "openai"
    assert stats["provider_health"]["openai"]["unavailable_models"] == ["g1"]

    cleared = await env.engine.clear_cache()

    assert cleared == {"preferred": "openai", "forced": "openai", "cooldowns": ["ollama", "openai"]}
    stats = await env.stats()
    assert stats["preferred_provider"] is None
    assert stats["forced_provider"] is None
    for provider in ("ollama", "openai"):
        health = stats["provider_health"][provider]
        assert health["state"] == "unknown"  # everything learned is forgotten, answers included
        assert health["unavailable_models"] == []
    env.fakes.ok("ollama")
    assert await env.ask() == "ollama/m1"
    assert (await env.stats())["preferred_provider"] == "ollama"


async def test_clear_cache_on_a_clean_state_reports_nothing(make_env):
    env = make_env()
    assert await env.engine.clear_cache() == {"preferred": None, "forced": None, "cooldowns": []}


# --- last resort -----------------------------------------------------------------------------------------


async def _cool_everything(env: Env) -> None:
    env.fakes.fail("ollama", server_error())
    env.fakes.fail("openai", server_error("g1"))
    with pytest.raises(AllProvidersFailedError):
        await env.ask()
    stats = await env.stats()
    assert stats["provider_health"]["ollama"]["state"] == "cooling"
    assert stats["provider_health"]["openai"]["state"] == "cooling"
    env.fakes.reset_counts()
    env.clock.advance(10)


async def test_every_provider_cooling_still_tries_all_in_priority_order(make_env, caplog):
    env = make_env()
    await _cool_everything(env)

    # Only openai works now: ollama is tried first (priority order), then openai answers.
    env.fakes.ok("openai")
    caplog.set_level(logging.INFO)
    assert await env.ask() == "openai/g1"
    assert env.fakes.log == [("ollama", "m1"), ("openai", "g1")]
    assert _records(caplog, logging.WARNING, "Every provider is cooling down")
    assert (await env.health("openai"))["state"] == "healthy"
    assert (await env.health("ollama"))["state"] == "cooling"


async def test_every_provider_cooling_primary_answers_if_it_works_now(make_env):
    env = make_env()
    await _cool_everything(env)
    env.fakes.ok("ollama")
    assert await env.ask() == "ollama/m1"
    assert env.fakes.log == [("ollama", "m1")]
    assert (await env.health("ollama"))["state"] == "healthy"
    assert (await env.stats())["preferred_provider"] == "ollama"


# --- models within a provider ------------------------------------------------------------------------------


def test_a_404_is_a_model_not_found_error():
    assert not isinstance(ModelHTTPError(404, "g1"), ModelNotFoundError)  # why the fakes use for_category
    error = http_error(404, "g1")
    assert isinstance(error, ModelNotFoundError) and isinstance(error, ModelHTTPError)
    assert error.status_code == 404


async def test_missing_model_moves_to_the_next_model_and_cools_only_that_model(make_env):
    env = make_env()
    env.fakes.fail("ollama", server_error())
    env.fakes.fail("openai", lambda: http_error(404, "g1", "The model `g1` does not exist"), "g1")

    assert await env.ask() == "openai/g2"

    assert env.fakes.log == [("ollama", "m1"), ("openai", "g1"), ("openai", "g2")]
    health = await env.health("openai")
    assert health["state"] == "healthy"
    assert health["available"] is True
    assert health["unavailable_models"] == ["g1"]
    assert (await env.stats())["preferred_provider"] == "openai"

    # g1 is skipped while it cools down; g2 answers directly.
    env.clock.advance(10)
    assert await env.ask() == "openai/g2"
    assert env.fakes.count("openai", "g1") == 1

    # After the model's cooldown g1 is tried again first.
    env.fakes.ok("openai", "g1")
    env.clock.advance(300)
    env.fakes.reset_counts()
    assert await env.ask() == "openai/g1"  # ollama (half-open) still fails its probe; g1 is back
    assert env.fakes.log == [("ollama", "m1"), ("openai", "g1")]
    assert (await env.health("openai"))["unavailable_models"] == []


async def test_all_models_missing_moves_on_to_the_next_provider_and_status_says_it_cannot_answer(make_env):
    env = make_env()
    env.fakes.fail("openai", lambda: http_error(404, "g"))
    await env.engine.force_provider("openai", 600)

    assert await env.ask() == "ollama/m1"

    assert env.fakes.log == [("openai", "g1"), ("openai", "g2"), ("ollama", "m1")]
    health = await env.health("openai")
    assert health["state"] == "cooling", "no model of it exists there: not 🟢"
    assert health["failures"] == 0 and health["cooldown_seconds_left"] == 300  # its models' cooldowns, not its own
    assert health["unavailable_models"] == ["g1", "g2"]


async def test_a_provider_with_no_model_left_is_announced_down_once_and_back_once(make_env):
    """An `ollama pull` nobody made: admins hear it is down (once, not per model) and when it is back."""
    env = make_env()
    events = []
    env.engine.add_listener(events.append)
    env.fakes.fail("openai", lambda: http_error(404, "g"))
    await env.engine.force_provider("openai", 3600)
    assert await env.ask() == "ollama/m1"
    one_missing = [(e.kind, e.provider) for e in events if isinstance(e, HealthEvent)]
    assert one_missing == [("down", "openai")], "g1 missing alone said nothing; g2 missing too: down"
    assert "404" in next(e for e in events if isinstance(e, HealthEvent)).error

    env.fakes.ok("openai")
    env.clock.advance(300)  # the models' cooldowns are over: the next request tries g1 again
    assert await env.ask() == "openai/g1"
    assert [(e.kind, e.provider) for e in events if isinstance(e, HealthEvent)] == [
        ("down", "openai"), ("recovered", "openai")]
    assert (await env.health("openai"))["state"] == "healthy"


# --- errors that are the caller's, not the provider's -------------------------------------------------------


async def test_a_bad_request_every_provider_refuses_is_raised_unchanged_without_cooldown(make_env):
    env = make_env()
    error = http_error(400, "m1", "messages: field required")
    assert isinstance(error, ModelRequestRejectedError)
    env.fakes.fail("ollama", error)
    env.fakes.fail("openai", lambda: http_error(400, "g1", "messages: field required"))
    events = []
    env.engine.add_listener(events.append)

    with pytest.raises(ModelHTTPError) as raised:
        await env.ask()

    assert raised.value is error, "the request's own error, not 'all providers failed'"
    assert raised.value.status_code == 400
    assert env.fakes.count("openai") == 1
    stats = await env.stats()
    assert stats["provider_health"]["ollama"]["state"] == "healthy"  # it answered: with a refusal
    assert stats["provider_health"]["ollama"]["failures"] == 0
    assert stats["preferred_provider"] is None
    assert not [e for e in events if isinstance(e, HealthEvent)], "no outage to announce"
    env.fakes.ok("ollama")
    assert await env.ask() == "ollama/m1"


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_a_refusal_only_one_provider_gives_falls_back_without_cooldown(make_env, status):
    """Ollama's "model does not support tools" 400: the next provider answers, nobody cools down."""
    env = make_env()
    env.fakes.fail("ollama", lambda: http_error(status, "m1", "registry.ollama.ai/library/m1 does not support tools"))
    assert await env.ask() == "openai/g1"
    health = await env.health("ollama")
    assert health["state"] == "healthy" and health["cooldown_seconds_left"] == 0
    assert "does not support tools" in health["last_error"]  # /llm_status shows why it is not used
    assert await env.ask() == "openai/g1"
    assert env.fakes.count("ollama") == 2, "tried again: it may be only this request it refuses"


async def test_the_same_refusal_on_every_request_tells_the_admins_once(make_env, caplog):
    env = make_env()
    events = []
    env.engine.add_listener(events.append)
    env.fakes.fail("ollama", lambda: http_error(400, "m1", "registry.ollama.ai/library/m1 does not support tools"))
    with caplog.at_level(logging.ERROR, logger="llm_fallback"):
        for _ in range(6):
            assert await env.ask() == "openai/g1"
    told = [e for e in events if isinstance(e, HealthEvent)]
    assert [(e.kind, e.provider) for e in told] == [("rejects_requests", "ollama")]
    assert "does not support tools" in told[0].error
    assert len([r for r in caplog.records if "refuses every request" in r.getMessage()]) == 1


async def test_a_refusal_every_provider_gives_is_the_requests_own_and_tells_the_admins_nothing(make_env, caplog):
    """No provider is misconfigured when all of them refuse the request: nobody "refuses every request"."""
    env = make_env()
    events = []
    env.engine.add_listener(events.append)
    env.fakes.fail("ollama", lambda: http_error(400, "m1", "Bad request."))
    env.fakes.fail("openai", lambda: http_error(400, "g1", "Invalid request: messages too long"))
    with caplog.at_level(logging.ERROR, logger="llm_fallback"):
        for _ in range(6):
            with pytest.raises(ModelRequestRejectedError):
                await env.ask()
    assert [e for e in events if isinstance(e, HealthEvent)] == []
    assert not [r for r in caplog.records if "refuses every request" in r.getMessage()]


async def test_content_filter_refusal_is_not_routed_around(make_env):
    env = make_env()
    error = ContentFilterError("Content filter triggered")
    env.fakes.fail("ollama", error)

    with pytest.raises(ContentFilterError) as raised:
        await env.ask()

    assert raised.value is error
    assert env.fakes.count("openai") == 0
    assert (await env.health("ollama"))["state"] == "healthy"


async def test_content_filter_code_on_an_api_error_is_not_routed_around(make_env):
    env = make_env()
    env.fakes.fail("ollama", lambda: http_error(400, "m1", "filtered", provider_error_code="content_filter"))
    with pytest.raises(ContentFilterError) as raised:  # the caller shows a refusal, not an outage
        await env.ask()
    assert isinstance(raised.value.__cause__, ModelHTTPError)
    assert env.fakes.count("openai") == 0
    assert (await env.health("ollama"))["state"] == "healthy"


# --- everything fails -----------------------------------------------------------------------------------------


async def test_all_failed_error_lists_attempts_and_leaks_no_secret(make_env, caplog):
    caplog.set_level(logging.DEBUG)
    env = make_env()
    env.fakes.fail("ollama", lambda: refused("m1"))
    env.fakes.fail("openai", lambda: http_error(401, "g1", f"Incorrect API key provided: {OPENAI_KEY}."))

    with pytest.raises(AllProvidersFailedError) as raised:
        await env.ask()

    error = raised.value
    assert isinstance(error, RuntimeError)
    assert [(a.provider, a.model) for a in error.attempts] == [("ollama", "m1"), ("openai", "g1")]
    assert [a.kind for a in error.attempts] == [FailureKind.CONNECTION, FailureKind.AUTH]
    assert "Connection refused" in str(error)
    stats = await env.stats()
    assert stats["provider_health"]["openai"]["state"] == "cooling"
    assert stats["provider_health"]["openai"]["last_error_kind"] == FailureKind.AUTH.value

    texts = [str(error), repr(error), *map(str, error.attempts), *map(repr, error.attempts), caplog.text,
             *(r.getMessage() for r in caplog.records), str(stats)]
    for text in texts:
        assert OPENAI_KEY not in text
        assert "SECRET-abcdef" not in text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("❌ All LLM providers failed!" in r.getMessage() for r in errors)
    assert any("OPENAI_API_KEY" in r.getMessage() for r in errors)  # names the setting to fix


async def test_secret_in_a_connection_error_is_redacted(make_env, caplog):
    caplog.set_level(logging.DEBUG)
    env = make_env()
    env.fakes.fail("ollama", server_error())
    env.fakes.fail("openai", lambda: ModelConnectionError("g1", f"proxy said: bad key {OPENAI_KEY}"))
    with pytest.raises(AllProvidersFailedError) as raised:
        await env.ask()
    stats = await env.stats()
    for text in (str(raised.value), caplog.text, str(stats)):
        assert "SECRET-abcdef" not in text


NON_SK_KEY = "tok_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij"


async def test_secret_cut_by_truncation_does_not_leak(make_env, caplog):
    caplog.set_level(logging.DEBUG)
    env = make_env(openai_key=NON_SK_KEY)
    env.fakes.fail("ollama", server_error())
    padding = "x" * 130  # "HTTP 401: " + padding puts the key across the 160-character cut
    env.fakes.fail("openai", lambda: http_error(401, "g1", f"{padding} {NON_SK_KEY}"))
    with pytest.raises(AllProvidersFailedError) as raised:
        await env.ask()
    stats = await env.stats()
    for text in (str(raised.value), caplog.text, str(stats)):
        assert NON_SK_KEY[:12] not in text


# --- cancellation and races ---------------------------------------------------------------------------------------


async def test_cancelled_request_records_no_failure(make_env):
    env = make_env()
    env.fakes.gate("ollama")
    task = asyncio.create_task(env.ask())
    await wait_until(lambda: env.fakes.count("ollama") == 1)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert env.fakes.count("openai") == 0
    health = await env.health("ollama")
    assert health["state"] == "unknown"  # not blamed; it never answered either
    assert health["failures"] == 0
    assert health["last_error"] is None
    env.fakes.ungate("ollama")
    assert await env.ask() == "ollama/m1"


async def test_cancelled_probe_releases_the_lease(make_env):
    env = make_env()
    await fail_primary_once(env)
    env.clock.advance(300)
    env.fakes.gate("ollama")
    probe = asyncio.create_task(env.ask())
    await wait_until(lambda: env.fakes.count("ollama") == 2)
    assert await env.store.get_many(["probe:ollama"]) != [None]
    assert await env.ask() == "openai/g1"  # meanwhile the others skip ollama

    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe

    assert await env.store.get_many(["probe:ollama"]) == [None]
    health = await env.health("ollama")
    assert health["state"] == "half_open"
    assert health["failures"] == 1
    env.fakes.ungate("ollama")
    assert await env.ask() == "ollama/m1"  # the next request probes at once
    assert env.fakes.count("ollama") == 3


async def test_late_success_does_not_clear_a_newer_failure(make_env):
    env = make_env()
    release_a = env.fakes.hold_next("ollama")  # request A: slow on ollama, will succeed
    request_a = asyncio.create_task(env.ask("A"))
    await wait_until(lambda: env.fakes.count("ollama") == 1)

    env.fakes.fail("ollama", server_error())  # request B fails on ollama meanwhile
    assert await env.ask("B") == "openai/g1"
    assert (await env.health("ollama"))["state"] == "cooling"

    release_a.set()
    assert await request_a == "ollama/m1"

    health = await env.health("ollama")
    assert health["state"] == "cooling"
    assert health["failures"] == 1
    env.fakes.ok("ollama")
    assert await env.ask("C") == "openai/g1"


async def test_late_last_resort_success_does_not_clear_a_newer_failure(make_env):
    env = make_env()
    env.fakes.fail("ollama", server_error())
    env.fakes.fail("openai", server_error("g1"))
    with pytest.raises(AllProvidersFailedError):
        await env.ask()
    env.clock.advance(10)
    # Both cooling: A tries ollama (last resort), slowly, and will succeed.
    env.fakes.ok("ollama")
    env.fakes.ok("openai")
    release_a = env.fakes.hold_next("ollama")
    request_a = asyncio.create_task(env.ask("A"))
    await wait_until(lambda: env.fakes.count("ollama") == 2)
    # B also tries ollama (last resort), which fails now: a newer failure; openai answers B.
    env.fakes.fail("ollama", server_error())
    assert await env.ask("B") == "openai/g1"
    assert (await env.health("ollama"))["failures"] == 2

    release_a.set()
    assert await request_a == "ollama/m1"
    health = await env.health("ollama")
    assert health["state"] == "cooling"
    assert health["failures"] == 2


# --- streaming -------------------------------------------------------------------------------------------------------


async def test_stream_failing_before_first_event_fails_over(make_env):
    env = make_env()
    env.fakes.fail("ollama", lambda: refused("m1"))
    assert await env.ask_stream() == "openai/g1"
    assert env.fakes.count("ollama") == 1
    assert (await env.health("ollama"))["state"] == "cooling"
    assert (await env.stats())["preferred_provider"] == "openai"


async def test_healthy_stream(make_env):
    env = make_env()
    assert await env.ask_stream() == "ollama/m1"
    assert (await env.stats())["preferred_provider"] == "ollama"


async def test_stream_cut_after_first_chunk_raises_and_cools_down(make_env):
    env = make_env()
    cut = ModelConnectionError("m1", "Connection reset by peer", phase="read")
    env.fakes.cut_stream("ollama", cut)

    received: list[str] = []
    with pytest.raises(Exception) as raised:  # noqa: PT011 - whatever the caller sees, it is not a restart
        async with env.agent.run_stream("hi") as result:
            async for chunk in result.stream_text(delta=True, debounce_by=None):
                received.append(chunk)

    assert raised.value is cut or cut in _chain(raised.value)
    assert received == ["ollama/m1"]  # half an answer was out
    assert env.fakes.count("openai") == 0  # not restarted on the fallback
    health = await env.health("ollama")
    assert health["state"] == "cooling"
    assert health["last_error_kind"] == FailureKind.STREAM_CUT.value

    assert await env.ask_stream() == "openai/g1"  # the next request avoids it


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


async def test_stream_bad_request_is_raised_without_cooldown(make_env):
    env = make_env()
    env.fakes.fail("ollama", lambda: http_error(400, "m1"))
    env.fakes.fail("openai", lambda: http_error(400, "g1"))
    with pytest.raises(ModelHTTPError):
        await env.ask_stream()
    assert env.fakes.count("openai") == 1
    assert (await env.health("ollama"))["state"] == "healthy"
    env.fakes.ok("openai")
    assert await env.ask_stream() == "openai/g1"  # refused only by ollama now: the fallback answers


async def test_consumer_error_while_streaming_does_not_blame_the_provider(make_env):
    env = make_env()
    with pytest.raises(KeyError):
        async with env.agent.run_stream("hi") as result:
            async for _ in result.stream_text(delta=True):
                raise KeyError("handler bug")
    assert (await env.health("ollama"))["state"] == "healthy"


# --- the manual API -------------------------------------------------------------------------------------------------------


async def test_report_failure_and_success_by_hand(make_env):
    env = make_env()
    await env.engine.report_provider_failure("ollama", Exception("Connection timeout"))

    health = await env.health("ollama")
    assert health["state"] == "cooling"
    assert 299 <= health["cooldown_seconds_left"] <= 300
    assert "Connection timeout" in health["last_error"]
    assert await env.engine.get_working_provider() == "openai"
    assert await env.ask() == "openai/g1"
    assert env.fakes.count("ollama") == 0

    await env.engine.report_provider_success("ollama")

    health = await env.health("ollama")
    assert health["state"] == "healthy"
    assert health["cooldown_seconds_left"] == 0
    assert await env.engine.get_working_provider() == "ollama"
    assert (await env.stats())["preferred_provider"] == "ollama"
    assert await env.ask() == "ollama/m1"


async def test_manual_api_rejects_unknown_providers(make_env):
    env = make_env()
    with pytest.raises(ValueError):
        await env.engine.report_provider_failure("anthropic", Exception("x"))
    with pytest.raises(ValueError):
        await env.engine.report_provider_success("anthropic")


async def test_get_working_provider_when_everything_cools(make_env):
    env = make_env()
    await env.engine.report_provider_failure("ollama", Exception("down"))
    await env.engine.report_provider_failure("openai", Exception("down"))
    assert await env.engine.get_working_provider() == "ollama"


# --- several processes sharing one store -----------------------------------------------------------------------------------


async def test_a_failure_seen_by_one_process_is_skipped_by_another(make_env):
    first = make_env()
    second = make_env(store=first.store, fakes=first.fakes)
    first.fakes.fail("ollama", server_error())
    assert await first.ask() == "openai/g1"
    first.fakes.ok("ollama")
    assert await second.ask() == "openai/g1"
    assert first.fakes.count("ollama") == 1


async def test_preferred_follows_the_provider_that_served_across_processes(make_env):
    first = make_env()
    second = make_env(store=first.store, fakes=first.fakes)
    assert await first.ask() == "ollama/m1"  # first caches ollama
    second.fakes.fail("ollama", server_error())
    assert await second.ask() == "openai/g1"  # second caches openai
    assert (await first.stats())["preferred_provider"] == "openai"

    first.fakes.ok("ollama")
    first.clock.advance(300)
    assert await first.ask() == "ollama/m1"  # first probes ollama: recovered, served
    assert (await first.stats())["preferred_provider"] == "ollama"


async def test_clear_in_one_process_then_traffic_in_another_sets_preferred_again(make_env):
    first = make_env()
    second = make_env(store=first.store, fakes=first.fakes)
    assert await first.ask() == "ollama/m1"
    await second.engine.clear_cache()
    assert (await first.stats())["preferred_provider"] is None
    assert await first.ask() == "ollama/m1"
    assert (await first.stats())["preferred_provider"] == "ollama"


# --- logs -------------------------------------------------------------------------------------------------------------------------


def _records(caplog, level: int, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == level and text in r.getMessage()]


async def test_log_markers(make_env, caplog):
    caplog.set_level(logging.DEBUG)
    env = make_env()
    assert _records(caplog, logging.INFO, "✅ LLMProviderFallback initialized")
    assert _records(caplog, logging.INFO, "🔧 Provider order: ollama → openai")

    env.fakes.fail("ollama", server_error())
    assert await env.ask() == "openai/g1"
    assert _records(caplog, logging.WARNING, "⚠️ Primary provider failed, using fallback: openai")
    failed = _records(caplog, logging.WARNING, "⚠️ Provider ollama failed:")
    assert len(failed) == 1
    assert "(cooldown: 300s)" in failed[0].getMessage()

    env.fakes.fail("openai", server_error("g1"))
    env.clock.advance(300)
    with pytest.raises(AllProvidersFailedError):
        await env.ask()
    assert _records(caplog, logging.ERROR, "❌ All LLM providers failed!")


async def test_healthy_traffic_is_quiet(make_env, caplog):
    env = make_env()
    caplog.set_level(logging.DEBUG)
    assert await env.ask() == "ollama/m1"
    caplog.clear()
    for _ in range(19):
        env.clock.advance(60)
        assert await env.ask() == "ollama/m1"
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert loud == [], [r.getMessage() for r in loud]


async def test_in_flight_failures_do_not_push_the_cooldown_back(make_env, clock):
    """Requests already on their way when the primary died fail later: the cooldown the first
    failure started keeps its end, so the probe (and recovery) comes when promised."""
    env = make_env()
    env.fakes.fail("ollama", server_error())
    late = env.fakes.hold_next("ollama")  # request A is on its way to the dying ollama
    request_a = asyncio.create_task(env.ask("A"))
    await wait_until(lambda: env.fakes.count("ollama") == 1)

    assert await env.ask("B") == "openai/g1"  # B detects the outage at t0
    assert (await env.health("ollama"))["cooldown_seconds_left"] == 300

    clock.advance(120)
    late.set()  # A's answer arrives 2 min later, as an error
    assert await request_a == "openai/g1"
    health = await env.health("ollama")
    assert health["cooldown_seconds_left"] == 180  # not reset to 300
    assert health["failures"] == 1

    clock.advance(181)
    env.fakes.ok("ollama")
    assert await env.ask("C") == "ollama/m1"  # probed and back on time


async def test_a_stale_snapshot_does_not_probe_after_a_failed_probe(make_env, clock):
    """Request X read the state while ollama was half-open; the probe fails and a new
    cooldown starts before X asks for the lease: X must not probe ollama again."""
    env = make_env()
    env.fakes.fail("ollama", server_error())
    assert await env.ask() == "openai/g1"
    clock.advance(301)

    stale = await env.engine.health.read()  # X's read: half-open
    assert await env.ask() == "openai/g1"  # the probe fails: a new cooldown, lease released
    assert (await env.health("ollama"))["state"] == "cooling"
    assert await env.engine.health.take_probe(stale, "ollama") is None
    assert env.fakes.count("ollama") == 2


async def test_a_burst_logs_the_preferred_provider_once(make_env, caplog):
    env = make_env()
    with caplog.at_level(logging.INFO, logger="llm_fallback"):
        await asyncio.gather(*(env.ask(f"q{i}") for i in range(50)))
    cached = [r for r in caplog.records if "cached as preferred" in r.getMessage()]
    assert len(cached) == 1, "log state changes, not every request"

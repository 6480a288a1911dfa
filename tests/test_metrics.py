"""Prometheus metrics: the engine's events and state, the bot's updates, `/metrics` served with the bot."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiogram.types import Update
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from pydantic_ai import Agent

from luka_bot.core.config import ConfigError, Settings, load_settings
from plugins.llm_fallback import (
    AllProvidersFailedError,
    AttemptEvent,
    FallbackEvent,
    HealthEvent,
    HedgeEvent,
    LLMFallbackModel,
    LLMProviderFallback,
    MemoryStateStore,
    ProviderSpec,
)
from plugins.llm_fallback.metrics import FallbackMetrics
from tests.conftest import Env, FakeClock, http_error, refused
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def state_of(registry: CollectorRegistry, provider: str) -> set[str]:
    return {s for s in ("healthy", "unknown", "cooling", "half_open", "forced")
            if value(registry, "llm_provider_state", provider=provider, state=s) == 1}


def test_engine_events_are_counted_as_they_happened(make_env: Callable[..., Env]) -> None:
    env = make_env()
    metrics = FallbackMetrics(env.engine)
    r = metrics.registry
    for event in (
        AttemptEvent("ollama", "m1", "timeout", seconds=3.0, blamed=True),
        AttemptEvent("openai", "g1", "ok", seconds=0.8, first_event_seconds=0.2, streamed=True),
        FallbackEvent("ollama", "openai"),
        HedgeEvent("ollama", "openai", delay=1.5),
        AttemptEvent("ollama", "m1", "hedge_lost", seconds=1.6),
        HealthEvent("down", "ollama", error="timeout", cooldown=300),
        HealthEvent("all_failed"),
    ):
        metrics(event)
    assert value(r, "llm_attempts_total", provider="ollama", model="m1", outcome="timeout") == 1
    assert value(r, "llm_attempts_total", provider="ollama", model="m1", outcome="hedge_lost") == 1
    assert value(r, "llm_attempts_total", provider="openai", model="g1", outcome="ok") == 1
    assert value(r, "llm_failovers_total", from_provider="ollama", to_provider="openai") == 1
    assert value(r, "llm_hedges_total", provider="ollama") == 1
    assert value(r, "llm_all_failed_total") == 1
    # the histogram: both phases for the streamed attempt, only `total` for an attempt without a first event
    assert value(r, "llm_attempt_seconds_count", provider="openai", phase="first_event") == 1
    assert value(r, "llm_attempt_seconds_sum", provider="openai", phase="first_event") == pytest.approx(0.2)
    assert value(r, "llm_attempt_seconds_sum", provider="openai", phase="total") == pytest.approx(0.8)
    assert value(r, "llm_attempt_seconds_count", provider="ollama", phase="total") == 2
    assert value(r, "llm_attempt_seconds_count", provider="ollama", phase="first_event") is None
    assert value(r, "llm_attempt_seconds_bucket", provider="ollama", phase="total", le="2.0") == 1


async def test_a_request_no_provider_answers_counts_one_all_failed(make_env: Callable[..., Env]) -> None:
    env = make_env()
    metrics = FallbackMetrics(env.engine)
    assert value(metrics.registry, "llm_all_failed_total") == 0  # exported before the first failure
    env.fakes.fail("ollama", refused("m1"))
    env.fakes.fail("openai", lambda: http_error(500, "g1"))
    with pytest.raises(RuntimeError):
        await env.ask()
    assert value(metrics.registry, "llm_all_failed_total") == 1


async def test_provider_state_and_cooldown_follow_the_shared_state(make_env: Callable[..., Env]) -> None:
    env = make_env()
    metrics = FallbackMetrics(env.engine)
    r = metrics.registry
    await metrics.refresh()
    assert state_of(r, "ollama") == {"unknown"} and state_of(r, "openai") == {"unknown"}  # nothing tried yet
    assert value(r, "llm_cooldown_seconds_remaining", provider="ollama") == 0

    env.fakes.fail("ollama", refused("m1"))
    assert await env.ask() == "openai/g1"
    await metrics.refresh()
    assert state_of(r, "ollama") == {"cooling"}
    assert value(r, "llm_cooldown_seconds_remaining", provider="ollama") == 300

    env.clock.advance(120)
    await metrics.refresh()
    assert value(r, "llm_cooldown_seconds_remaining", provider="ollama") == 180

    env.clock.advance(181)
    await env.engine.force_provider("openai", 600)
    await metrics.refresh()
    assert state_of(r, "ollama") == {"half_open"}
    assert state_of(r, "openai") == {"healthy", "forced"}
    assert value(r, "llm_cooldown_seconds_remaining", provider="ollama") == 0

    await env.engine.clear_cache()
    await metrics.refresh()
    assert state_of(r, "ollama") == {"unknown"} and state_of(r, "openai") == {"unknown"}


def test_two_apps_in_one_process_keep_separate_metrics(make_env: Callable[..., Env]) -> None:
    first, second = FallbackMetrics(make_env().engine), FallbackMetrics(make_env().engine)
    first(FallbackEvent("ollama", "openai"))
    assert value(first.registry, "llm_failovers_total", from_provider="ollama", to_provider="openai") == 1
    assert value(second.registry, "llm_failovers_total", from_provider="ollama", to_provider="openai") is None


async def test_metrics_after_a_scripted_fallback_match_what_happened() -> None:
    """Real HTTP against two fake providers, the engine on a fake clock; each step checks the metrics
    against what the fake servers received and what the user got."""
    primary, fallback = await FakeLLM("ollama").start(), await FakeLLM("openai").start()
    clock = FakeClock()
    engine = LLMProviderFallback(
        [ProviderSpec("ollama", "ollama", primary.v1_url, ("m1",), timeout=5, connect_timeout=1),
         ProviderSpec("openai", "openai", fallback.v1_url, ("g1",), api_key=SecretStr("sk-test-metrics-0123456789"),
                      timeout=5, connect_timeout=1)],
        MemoryStateStore(clock), clock=clock, failure_cooldown=300)
    metrics = FallbackMetrics(engine)
    r = metrics.registry
    agent: Agent[None, str] = Agent(LLMFallbackModel(engine))

    def attempts(provider: str, model: str, outcome: str) -> float:
        return value(r, "llm_attempts_total", provider=provider, model=model, outcome=outcome) or 0

    try:
        # 1. healthy: the primary answers, once plain and once streamed
        assert (await agent.run("hi")).output == "answer from ollama"
        async with agent.run_stream("hi") as streamed:
            assert await streamed.get_output() == "answer from ollama"
        assert attempts("ollama", "m1", "ok") == 2 == primary.count()
        assert value(r, "llm_attempt_seconds_count", provider="ollama", phase="total") == 2
        assert value(r, "llm_attempt_seconds_count", provider="ollama", phase="first_event") == 2

        # 2. the primary starts answering 500: that request falls back, the primary cools down
        primary.set_mode("http500")
        assert (await agent.run("hi")).output == "answer from openai"
        assert attempts("ollama", "m1", "server_error") == 1
        assert attempts("openai", "g1", "ok") == 1 == fallback.count()
        assert value(r, "llm_failovers_total", from_provider="ollama", to_provider="openai") == 1
        await metrics.refresh()
        assert state_of(r, "ollama") == {"cooling"}
        assert value(r, "llm_cooldown_seconds_remaining", provider="ollama") == 300

        # 3. while it cools, requests go straight to the fallback: skipping is not a fallback
        assert (await agent.run("hi")).output == "answer from openai"
        assert primary.count() == 3 and attempts("ollama", "m1", "server_error") == 1
        assert attempts("openai", "g1", "ok") == 2
        assert value(r, "llm_failovers_total", from_provider="ollama", to_provider="openai") == 1

        # 4. the fallback fails too: the cooling primary is tried as a last resort, then nothing is left
        fallback.set_mode("http500")
        with pytest.raises(AllProvidersFailedError):
            await agent.run("hi")
        assert attempts("openai", "g1", "server_error") == 1
        assert attempts("ollama", "m1", "server_error") == 2
        assert value(r, "llm_all_failed_total") == 1
        assert value(r, "llm_failovers_total", from_provider="openai", to_provider="ollama") is None

        # 5. both recover; after the cooldowns the primary's probe answers and it is healthy again
        primary.set_mode("ok")
        fallback.set_mode("ok")
        clock.advance(3600)
        await metrics.refresh()
        assert state_of(r, "ollama") == {"half_open"}
        assert (await agent.run("hi")).output == "answer from ollama"
        await metrics.refresh()
        assert state_of(r, "ollama") == {"healthy"}

        # every request a fake server received is one counted attempt, and nothing more
        for provider, model, fake in (("ollama", "m1", primary), ("openai", "g1", fallback)):
            counted = sum(attempts(provider, model, outcome) for outcome in ("ok", "server_error"))
            assert counted == fake.count() == value(r, "llm_attempt_seconds_count", provider=provider, phase="total")
    finally:
        await engine.aclose()
        await primary.stop()
        await fallback.stop()


def _settings(fake: FakeTelegram, llm: FakeLLM, **overrides: object) -> Settings:
    values: dict[str, object] = dict(BOT_TOKEN=fake.token, TELEGRAM_API_URL=fake.url, OLLAMA_URL=llm.url,
                  AVAILABLE_PROVIDERS={"ollama": ["m1"]}, METRICS_HOST="127.0.0.1")
    values.update(overrides)
    return Settings(_env_file=None, **values)


async def _scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {f"{s.name}{sorted(s.labels.items())}": s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_bot_serves_metrics_of_its_updates_and_llm_calls() -> None:
    from luka_bot.core.loader import build_app

    fake = await FakeTelegram(token="123456:METRICS-token-not-real").start()
    llm = await FakeLLM("ollama").start()
    port = free_port()
    app = build_app(_settings(fake, llm, METRICS_PORT=str(port)))
    try:
        await app.dp.emit_startup(bot=app.bot)
        message = fake.send_message("hello", user_id=77)
        await app.dp.feed_update(app.bot, Update.model_validate({"update_id": 1, "message": message}))
        assert [c.params["text"] for c in fake.calls_of("sendMessage")][-1] == "answer from ollama"
        scraped = await _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        await app.dp.emit_shutdown(bot=app.bot)
        await app.bot.session.close()
        await llm.stop()
        await fake.stop()
    assert scraped["bot_updates_total[('type', 'message')]"] == 1
    assert scraped["bot_update_seconds_count[]"] == 1
    assert scraped["bot_updates_in_flight[]"] == 0
    assert scraped["llm_provider_state[('provider', 'ollama'), ('state', 'healthy')]"] == 1
    assert scraped["llm_provider_state[('provider', 'ollama'), ('state', 'cooling')]"] == 0
    assert scraped["llm_all_failed_total[]"] == 0


def test_without_metrics_port_and_without_the_package_the_bot_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiogram import Dispatcher

    from luka_bot.core.metrics import setup_metrics

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    settings = load_settings(_env_file=None)
    dp = Dispatcher()
    before = len(dp.update.outer_middleware)
    assert setup_metrics(settings, None, dp) is None  # type: ignore[arg-type]
    assert len(dp.update.outer_middleware) == before and not dp.startup.handlers


def test_metrics_port_without_the_package_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"METRICS_PORT: .*pip install 'luka-bot\[metrics\]'"):
        load_settings(_env_file=None, METRICS_PORT="9100")


def test_the_bot_process_stops_with_one_line_naming_the_extra(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env.update(BOT_TOKEN="123456:METRICS-token-not-real", METRICS_PORT=str(free_port()),
               PYTHONPATH=str(ROOT))
    hide = "import sys; sys.modules['prometheus_client'] = None; from luka_bot.__main__ import main; main()"
    result = subprocess.run([sys.executable, "-c", hide], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "luka-bot[metrics]" in lines[0] and "Traceback" not in result.stderr, result.stderr

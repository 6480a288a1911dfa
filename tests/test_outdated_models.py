"""A configured model its vendor retired or deprecated is loud: status (Telegram, shell), and the admins once."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import SecretStr
from pydantic_ai.messages import ModelResponse, TextPart
from pydantic_ai.models.function import FunctionModel

from luka_bot.core.i18n import build_i18n
from luka_bot.llm_commands import render_status as render_cli
from plugins.llm_fallback import HealthEvent, LLMProviderFallback, MemoryStateStore, ProviderSpec
from plugins.llm_fallback.admin import render_status
from plugins.llm_fallback.alerts import AdminAlerts

from .conftest import FakeClock

DAY = datetime(2026, 12, 6, 12, tzinfo=UTC).timestamp()


async def answer(messages, info):  # noqa: ANN001, ANN201 - a FunctionModel's signature
    return ModelResponse(parts=[TextPart("ok")])


def engine_with(models: tuple[str, ...], clock: FakeClock, store: MemoryStateStore | None = None) -> LLMProviderFallback:
    specs = [ProviderSpec("ollama", "ollama", "http://127.0.0.1:9/v1", ("llama3.2",)),
             ProviderSpec("openai", "openai", "http://127.0.0.1:9/v1", models, api_key=SecretStr("sk-test-123456"))]
    fakes = {"ollama": {"llama3.2": FunctionModel(answer)}, "openai": {m: FunctionModel(answer) for m in models}}
    return LLMProviderFallback(specs, store or MemoryStateStore(clock), clock=clock, models=fakes)


async def test_status_names_a_retired_model_with_its_replacement_in_telegram_and_the_shell() -> None:
    engine = engine_with(("gpt-4-turbo", "gpt-6.1-terra"), FakeClock(DAY))
    status = await engine.status()
    (outdated,) = status.provider("openai").outdated_models
    assert outdated.model == "gpt-4-turbo" and outdated.retired and outdated.retirement_date == "2026-10-23"
    assert status.provider("ollama").outdated_models == []

    i18n = build_i18n()
    with i18n.context(), i18n.use_locale("en"):
        text = render_status(status).as_kwargs()["text"]
    assert f"❌ model gpt-4-turbo was retired on 2026-10-23: its requests fail; replacement: {outdated.replacement}" \
        in text
    with i18n.context(), i18n.use_locale("ru"):
        assert "снята с обслуживания 2026-10-23" in render_status(status).as_kwargs()["text"]
    assert "❌ openai model gpt-4-turbo was retired on 2026-10-23" in render_cli(status)
    assert (await engine.get_provider_stats())["provider_health"]["openai"]["outdated_models"][0]["retired"] is True
    await engine.aclose()


async def test_a_model_retiring_soon_is_a_warning_with_its_date() -> None:
    engine = engine_with(("gpt-5",), FakeClock(DAY))  # retires 2026-12-11 (pydantic-ai's table)
    (outdated,) = (await engine.status()).provider("openai").outdated_models
    assert not outdated.retired and outdated.retirement_date == "2026-12-11"
    await engine.aclose()


async def test_the_admins_hear_of_it_once_however_often_the_bot_starts() -> None:
    clock = FakeClock(DAY)
    store = MemoryStateStore(clock)
    sent: list[str] = []

    class Bot:
        async def send_message(self, chat_id: int, text: str) -> None:
            sent.append(text)

    for _ in range(3):  # three starts (or three replicas) on one store
        engine = engine_with(("gpt-4-turbo",), clock, store)
        alerts = AdminAlerts(Bot(), engine, [1])  # type: ignore[arg-type]
        engine.add_listener(alerts)
        await engine.announce_outdated_models()
        await alerts.drain()
        await engine.aclose()
    assert len(sent) == 1
    assert sent[0].startswith("❌ openai model gpt-4-turbo was retired on 2026-10-23: its requests fail. Replacement:")


def test_the_alert_event_carries_what_the_admin_needs() -> None:
    event = HealthEvent("model_deprecated", "openai", model="gpt-5", date="2026-12-11", replacement="gpt-6.1-sol")
    alerts = AdminAlerts(None, None, [1])  # type: ignore[arg-type]
    assert alerts._text(event) == ("⚠️ openai model gpt-5 is deprecated, retirement on 2026-12-11. Replacement: "
                                   "gpt-6.1-sol.")


def test_the_engines_start_up_line_claims_no_fallback_whose_models_are_all_retired(caplog) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="llm_fallback"):
        engine_with(("gpt-4-turbo",), FakeClock(DAY))
    assert "🔧 Primary: ollama, Fallback: none (every model of openai is retired)" in caplog.text

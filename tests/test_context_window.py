"""Prompts and context windows: fitted per attempt, refitted after an overflow, never an outage.

The fit itself (`plugins/llm_fallback/fit.py`) on pydantic-ai messages; the rest over real HTTP:
two FakeLLM servers on 127.0.0.1 that refuse a prompt beyond their `context_window` with the 400
that OpenAI, vLLM, llama.cpp's server or LM Studio sends, real `AsyncOpenAI` clients, real agents
on `LLMFallbackModel`. The fakes count tokens as UTF-8 bytes / 4, about what real tokenizers give
for English text; the bot estimates more (bytes / 3), so what it fits, fits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters

from plugins.llm_fallback import (
    AllProvidersFailedError,
    ContextRefitEvent,
    Event,
    FailureKind,
    HealthEvent,
    LLMFallbackModel,
    LLMProviderFallback,
    MemoryStateStore,
    PromptTooLongError,
    ProviderSpec,
    classify,
    fit_history,
)
from plugins.llm_fallback.errors import Blame
from plugins.llm_fallback.fit import HistoryFit, estimate_tokens
from plugins.llm_fallback.metrics import FallbackMetrics
from plugins.llm_fallback.overflow import Overflow, PromptTooLong
from tests.conftest import FakeClock
from tests.fakes.fake_llm import FakeLLM, prompt_tokens
from tests.test_classification_http import servers  # noqa: F401 - the fixture: (primary, fallback) FakeLLMs

INSTRUCTIONS = "You are Luka, a helpful assistant."
SERVER_STYLES = ["openai", "vllm", "llamacpp", "lmstudio"]


def turn(n: int, chars: int = 1500) -> list[ModelMessage]:
    return [ModelRequest(parts=[UserPromptPart(f"q{n} " + "x" * (chars - 3))]),
            ModelResponse(parts=[TextPart(f"a{n}")])]


def history(turns: int, chars: int = 1500) -> list[ModelMessage]:
    return [m for n in range(turns) for m in turn(n, chars)]


def user_texts(messages: Sequence[ModelMessage]) -> list[str]:
    return [p.content[:3].strip() for m in messages if isinstance(m, ModelRequest) for p in m.parts
            if isinstance(p, UserPromptPart) and isinstance(p.content, str)]


# --- the fit -------------------------------------------------------------------------------------------------


def test_the_oldest_turns_go_first_the_system_prompt_and_the_new_message_stay() -> None:
    first = ModelRequest(parts=[SystemPromptPart("Be brief."), UserPromptPart("q0 " + "x" * 1497)])
    messages = [first, ModelResponse(parts=[TextPart("a0")]), *history(4)[2:],
                ModelRequest(parts=[UserPromptPart("new " + "y" * 1496)])]
    per_turn = estimate_tokens("x" * 1500) + 10
    fitted = fit_history(messages, limit=3 * per_turn + 20)
    assert user_texts(fitted) == ["q2", "q3", "new"]
    assert isinstance(fitted[0], ModelRequest) and isinstance(fitted[0].parts[0], SystemPromptPart)
    assert fitted[0].parts[0].content == "Be brief."
    assert fit_history(messages, limit=100_000) is messages, "what fits is sent as it is"


def test_a_tool_call_goes_with_its_result() -> None:
    call = ToolCallPart("calculate", {"expression": "2+2"}, tool_call_id="c1")
    tool_turn = [ModelRequest(parts=[UserPromptPart("q0 " + "x" * 1497)]), ModelResponse(parts=[call]),
                 ModelRequest(parts=[ToolReturnPart("calculate", "4", tool_call_id="c1")]),
                 ModelResponse(parts=[TextPart("a0")])]
    messages = [*tool_turn, *turn(1), ModelRequest(parts=[UserPromptPart("new")])]
    fitted = fit_history(messages, limit=estimate_tokens("x" * 1500) + 40)
    assert user_texts(fitted) == ["q1", "new"]
    assert not any(isinstance(p, ToolCallPart | ToolReturnPart) for m in fitted for p in m.parts)


def test_the_current_turn_is_never_cut_a_message_too_long_alone_says_how_long_it_may_be() -> None:
    messages = [*history(2), ModelRequest(parts=[UserPromptPart("z" * 6000)])]
    with pytest.raises(PromptTooLong) as raised:
        fit_history(messages, limit=1000)
    assert raised.value.limit_chars is not None
    assert 2900 <= raised.value.limit_chars <= 3000, "1000 tokens of 3 bytes, less the message's own overhead"
    russian = [ModelRequest(parts=[UserPromptPart("ж" * 6000)])]
    with pytest.raises(PromptTooLong) as raised_ru:
        fit_history(russian, limit=1000)
    assert raised_ru.value.limit_chars is not None and raised_ru.value.limit_chars < 1500, "2 bytes a letter"


def test_a_refit_follows_the_window_the_server_names_scaled_by_how_it_counted() -> None:
    messages = [*history(6), ModelRequest(parts=[UserPromptPart("new")])]
    fit = HistoryFit(messages, ModelRequestParameters(), window=None)
    assert fit.first() is messages, "window unknown: sent as it is"
    sent = sum(estimate_tokens(p.content) + 4 for m in messages for p in m.parts if hasattr(p, "content"))
    fitted = fit.refit(Overflow(window=2000, prompt_tokens=sent * 3 // 4))  # it counts 3/4 of our estimate
    assert 1 <= fit.dropped < 6 and user_texts(fitted)[-1] == "new"
    assert fit.sent_tokens is not None and fit.sent_tokens <= 2000 * 4 // 3
    halved = HistoryFit(messages, ModelRequestParameters(), window=None)
    halved.first()
    halved.refit(Overflow())  # no window named: half of what was sent
    assert halved.sent_tokens is not None and halved.sent_tokens <= sent // 2


# --- over HTTP ------------------------------------------------------------------------------------------------


class World:
    def __init__(self, engine: LLMProviderFallback, primary: FakeLLM, fallback: FakeLLM):
        self.engine, self.primary, self.fallback = engine, primary, fallback
        self.events: list[Event] = []
        engine.add_listener(self.events.append)
        self.metrics = FallbackMetrics(engine, CollectorRegistry())
        self.agent: Agent[None, str] = Agent(LLMFallbackModel(engine), instructions=INSTRUCTIONS)

    def refits(self, provider: str) -> float | None:
        return self.metrics.registry.get_sample_value("llm_context_refits_total", {"provider": provider})

    async def state(self, provider: str) -> str:
        return (await self.engine.get_provider_stats())["provider_health"][provider]["state"]


@pytest.fixture
async def make(servers: tuple[FakeLLM, FakeLLM]) -> AsyncIterator[Any]:
    made: list[World] = []

    def build(*, primary_windows: dict[str, int] | None = None, fallback_windows: dict[str, int] | None = None,
              primary_models: tuple[str, ...] = ("m1",)) -> World:
        primary, fallback = servers
        specs = [ProviderSpec("ollama", "ollama", primary.v1_url, primary_models, timeout=5,
                              context_windows=primary_windows or {"*": 100_000}),
                 ProviderSpec("openai", "openai", fallback.v1_url, ("g1",), api_key=SecretStr("sk-test-ctx"),
                              timeout=5, context_windows=fallback_windows or {})]
        world = World(LLMProviderFallback(specs, MemoryStateStore(FakeClock())), primary, fallback)
        made.append(world)
        return world

    yield build
    for world in made:
        await world.engine.aclose()


async def ask(world: World, prompt: str, messages: list[ModelMessage], *, stream: bool) -> str:
    if not stream:
        return (await world.agent.run(prompt, message_history=messages)).output
    async with world.agent.run_stream(prompt, message_history=messages) as result:
        return await result.get_output()


def chat_requests(fake: FakeLLM) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["messages"][-1]["content"].startswith("new")]


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_stream"])
async def test_a_fallback_from_a_large_window_to_a_small_one_refits(make, stream: bool) -> None:
    """The primary (a large window) carries a long thread, then breaks; the fallback takes ~4,000
    characters and the bot does not know it: it gets the whole thread, refuses it, and gets it again fitted
    to the window it named. Before: its 400 went to the caller."""
    world = make()
    world.fallback.set_mode("ok", context_window=1000, overflow="openai")
    thread = history(8)
    assert await ask(world, "new question", thread, stream=stream) == "answer from ollama"
    world.primary.set_mode("http500")

    assert await ask(world, "new question", thread, stream=stream) == "answer from openai"
    refused, answered = chat_requests(world.fallback)
    assert prompt_tokens(refused["messages"], refused.get("tools")) > 1000
    assert prompt_tokens(answered["messages"], answered.get("tools")) <= 1000
    assert answered["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    assert answered["messages"][-1] == {"role": "user", "content": "new question"}
    assert 2 < len(answered["messages"]) < len(refused["messages"]), "the newest turns that fit went along"
    assert world.refits("openai") == 1 and world.refits("ollama") == 0
    assert [e for e in world.events if isinstance(e, ContextRefitEvent)] == [
        ContextRefitEvent("openai", "g1", 1000, len(thread) // 2 - (len(answered["messages"]) - 2) // 2)]
    assert await world.state("openai") == "healthy", "a refit is no failure"


async def test_a_known_small_window_is_fitted_before_sending_each_candidate_its_own(make) -> None:
    world = make(fallback_windows={"*": 1000})
    world.fallback.context_window = 1000
    world.primary.set_mode("http500")
    assert await ask(world, "new question", history(8), stream=False) == "answer from openai"
    (answered,) = chat_requests(world.fallback)
    assert prompt_tokens(answered["messages"], answered.get("tools")) <= 1000
    assert world.refits("openai") == 0, "nothing refused: fitted before sending"


@pytest.mark.parametrize("style", SERVER_STYLES)
async def test_each_servers_overflow_is_refitted_on_the_same_provider_not_an_outage(make, style: str) -> None:
    world = make(primary_windows={"*": 1_000_000})  # the bot thinks the primary takes anything
    world.primary.set_mode("ok", context_window=1000, overflow=style)
    assert await ask(world, "new question", history(8), stream=False) == "answer from ollama"
    assert world.fallback.count() == 0
    assert world.refits("ollama") == 1
    refused, answered = chat_requests(world.primary)
    assert prompt_tokens(answered["messages"], answered.get("tools")) <= 1000 < prompt_tokens(
        refused["messages"], refused.get("tools"))
    assert await world.state("ollama") == "healthy"


@pytest.mark.parametrize("style", SERVER_STYLES)
async def test_classification_of_each_servers_overflow(servers, style: str) -> None:
    import openai
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    primary, _ = servers
    primary.set_mode("ok", context_window=10, overflow=style)
    async with openai.AsyncOpenAI(base_url=primary.v1_url, api_key="k", max_retries=0) as client:
        agent = Agent(OpenAIChatModel("m1", provider=OpenAIProvider(openai_client=client)))
        with pytest.raises(Exception) as raised:
            await agent.run("hello there " * 20)
    verdict = classify(raised.value)
    assert (verdict.kind, verdict.fall_back, verdict.blame) == (FailureKind.CONTEXT_WINDOW, True, Blame.NONE)
    assert verdict.overflow == Overflow(window=10, prompt_tokens=prompt_tokens(primary.requests[0]["messages"]))


async def test_a_message_too_long_for_every_window_is_no_outage(make) -> None:
    world = make(primary_windows={"*": 1000})
    for fake in (world.primary, world.fallback):
        fake.set_mode("ok", context_window=1000, overflow="llamacpp")
    with pytest.raises(PromptTooLongError) as raised:
        await ask(world, "new " + "z" * 6000, [], stream=True)
    error = raised.value
    assert isinstance(error, AllProvidersFailedError), "callers that catch every failure still catch it"
    assert [a.kind for a in error.attempts] == [FailureKind.CONTEXT_WINDOW] * 2
    assert world.primary.count() == 0, "the primary's window is known: nothing sent"
    assert error.limit_chars is not None and 1500 < error.limit_chars < 4000
    assert not [e for e in world.events if isinstance(e, HealthEvent)], "no alert, no cooldown"
    assert await world.state("ollama") != "cooling" and await world.state("openai") != "cooling"

    answer = await ask(world, "new " + "z" * (error.limit_chars - 4), [], stream=False)
    assert answer == "answer from openai", "a message of the length it named is answered"


async def test_a_larger_window_model_of_the_same_provider_is_tried_before_the_next_provider(make) -> None:
    world = make(primary_windows={"m1": 1000, "m2": 100_000}, primary_models=("m1", "m2"))
    assert await ask(world, "new " + "z" * 6000, [], stream=False) == "answer from ollama"
    assert [r["model"] for r in chat_requests(world.primary)] == ["m2"]
    assert world.fallback.count() == 0


async def test_an_outage_and_a_too_small_window_is_an_outage(make) -> None:
    world = make(fallback_windows={"*": 1000})
    await world.primary.stop()
    with pytest.raises(AllProvidersFailedError) as raised:
        await ask(world, "new " + "z" * 6000, [], stream=False)
    assert not isinstance(raised.value, PromptTooLongError), "the primary could answer it once it is back"
    assert [a.kind for a in raised.value.attempts] == [FailureKind.CONNECTION, FailureKind.CONTEXT_WINDOW]
    assert any(isinstance(e, HealthEvent) and e.kind == "all_failed" for e in world.events)


async def test_too_long_for_the_one_that_would_take_it_refused_by_the_other_is_too_long(make) -> None:
    """The primary refuses every request as a bad one (say, its model takes no tools); the fallback would
    answer, but not a message this long: the user is told the limit, not handed the primary's 400."""
    world = make(fallback_windows={"*": 1000})
    world.primary.set_mode("http400")
    with pytest.raises(PromptTooLongError) as raised:
        await ask(world, "new " + "z" * 6000, [], stream=False)
    assert [a.kind for a in raised.value.attempts] == [FailureKind.REQUEST, FailureKind.CONTEXT_WINDOW]
    assert raised.value.limit_chars is not None

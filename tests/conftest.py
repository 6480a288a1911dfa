"""Shared fixtures: a fake clock, scriptable in-process LLM providers, the engine factory.

No network, no sleeping: every provider is a pydantic-ai ``FunctionModel`` (with both
``function=`` and ``stream_function=``) that answers ``"<provider>/<model>"`` or raises a real
``pydantic_ai.exceptions`` instance, and time only moves when a test calls ``clock.advance()``.

Typical use::

    async def test_something(make_env):
        env = make_env()
        env.fakes.fail("ollama", http_error(500, "m1"))
        assert await env.ask() == "openai/g1"
        assert env.fakes.count("ollama") == 1
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_ai import Agent
from pydantic_ai.exceptions import (
    ModelAuthenticationError,
    ModelConnectionError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelOverloadedError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelRequestRejectedError,
    ModelServerError,
    ModelUnavailableError,
)
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from plugins.llm_fallback import (
    LLMFallbackModel,
    LLMProviderFallback,
    LoopLagMonitor,
    MemoryStateStore,
    ProviderSpec,
    StateStore,
)
from tests.fakes.redis_fixtures import own_redis, redis_server, redis_url  # noqa: F401

OPENAI_KEY = "sk-test-SECRET-abcdef123456"
"""The openai ProviderSpec's API key: it must never show up in errors, logs or status."""

PROVIDER_MODELS: dict[str, tuple[str, ...]] = {"ollama": ("m1",), "openai": ("g1", "g2")}


# --- time -------------------------------------------------------------------------------------


class FakeClock:
    """A wall clock that only moves when told to (``clock()`` returns ``clock.now``)."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- errors as pydantic-ai's adapters raise them ------------------------------------------------


async def wait_until(predicate: Callable[[], bool], *, rounds: int = 2000, interval: float = 0) -> None:
    """Let other tasks run until `predicate()` holds (event-loop turns, each `interval` s long)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not reached")


def _http_category(status: int) -> type | None:
    """The category pydantic-ai's adapters give an HTTP status (see ``_model_errors.http_status_category``)."""
    if status in (401, 403):
        return ModelAuthenticationError
    if status == 404:
        return ModelNotFoundError
    if status in (400, 422):
        return ModelRequestRejectedError
    if status == 402:
        return ModelQuotaExceededError
    if status == 429:
        return ModelRateLimitError
    if status == 529:
        return ModelOverloadedError
    if status == 503:
        return ModelUnavailableError
    if 500 <= status < 600:
        return ModelServerError
    return None


def http_error(status: int, model: str, message: str | None = None, **kwargs: Any) -> ModelHTTPError:
    """A ``ModelHTTPError`` of ``status`` that is also its category (as the OpenAI adapter raises it)."""
    body = {"error": {"message": message or f"fake HTTP {status}"}}
    return ModelHTTPError.for_category(_http_category(status), status_code=status, model_name=model, body=body,
                                       **kwargs)


def refused(model: str) -> ModelConnectionError:
    return ModelConnectionError(model, "Connection refused", phase="connect")


# --- a loop that never lags


class ResponsiveLoop(LoopLagMonitor):
    """A loop-lag monitor that never sees lag: for tests about timeouts, not about a busy loop
    (on a loaded CI machine real lag could otherwise excuse the timeout under test)."""

    def excuses(self, mark: float, elapsed: float) -> bool:
        return False


# --- scriptable providers -------------------------------------------------------------------------

Behaviour = Any
"""``"ok"``, an exception instance, or a zero-argument callable returning a fresh exception."""


@dataclass
class FakeProviders:
    """Per provider/model behaviour and call counts of the injected ``FunctionModel``s.

    - ``ok(p, m=None)`` / ``fail(p, error, m=None)``: what the next calls do (``m=None``: every model
      of provider ``p``); a call decides its outcome when it starts;
    - ``gate(p, m=None)``: an ``asyncio.Event`` every call awaits (after starting) until it is set;
      ``ungate(p)`` removes it;
    - ``hold_next(p, m=None)``: an ``asyncio.Event`` only the next call awaits;
    - ``cut_stream(p, error, m=None)``: streamed calls send their first chunk, then raise ``error``;
    - ``bad_reply(p, kind, m=None)``: answer 200 with an unusable reply: ``"empty"`` (no text) or
      ``"unknown_tool"`` (a call of a tool that does not exist); ``ok()`` ends it;
    - ``count(p, m=None)``: calls received (started), non-streamed and streamed together;
      ``log``: every call's ``(provider, model)`` in order.
    """

    behaviour: dict[tuple[str, str], Behaviour] = field(default_factory=dict)
    gates: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    holds: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    cuts: dict[tuple[str, str], Behaviour] = field(default_factory=dict)
    bad: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    log: list[tuple[str, str]] = field(default_factory=list)

    def _keys(self, provider: str, model: str | None) -> list[tuple[str, str]]:
        return [(provider, model)] if model else [(provider, m) for m in PROVIDER_MODELS[provider]]

    def ok(self, provider: str, model: str | None = None) -> None:
        for key in self._keys(provider, model):
            self.behaviour[key] = "ok"
            self.cuts.pop(key, None)
            self.bad.pop(key, None)

    def bad_reply(self, provider: str, kind: str, model: str | None = None) -> None:
        for key in self._keys(provider, model):
            self.bad[key] = kind

    def fail(self, provider: str, error: Behaviour, model: str | None = None) -> None:
        for key in self._keys(provider, model):
            self.behaviour[key] = error

    def cut_stream(self, provider: str, error: Behaviour, model: str | None = None) -> None:
        for key in self._keys(provider, model):
            self.cuts[key] = error

    def gate(self, provider: str, model: str | None = None) -> asyncio.Event:
        event = asyncio.Event()
        for key in self._keys(provider, model):
            self.gates[key] = event
        return event

    def ungate(self, provider: str, model: str | None = None) -> None:
        for key in self._keys(provider, model):
            self.gates.pop(key, None)

    def hold_next(self, provider: str, model: str | None = None) -> asyncio.Event:
        event = asyncio.Event()
        for key in self._keys(provider, model):
            self.holds[key] = event
        return event

    def count(self, provider: str, model: str | None = None) -> int:
        return sum(self.calls[key] for key in self._keys(provider, model))

    def reset_counts(self) -> None:
        self.calls.clear()
        self.log.clear()

    @staticmethod
    def _error(behaviour: Behaviour) -> BaseException | None:
        if behaviour == "ok" or behaviour is None:
            return None
        if isinstance(behaviour, BaseException):
            return behaviour
        return behaviour()

    async def _enter(self, key: tuple[str, str]) -> None:
        self.calls[key] += 1
        self.log.append(key)
        error = self._error(self.behaviour.get(key, "ok"))
        hold = self.holds.pop(key, None)
        if hold is not None:
            for other in [k for k, v in self.holds.items() if v is hold]:
                del self.holds[other]
            await hold.wait()
        gate = self.gates.get(key)
        if gate is not None:
            await gate.wait()
        if error is not None:
            raise error

    def model(self, provider: str, model: str) -> FunctionModel:
        key = (provider, model)
        answer = f"{provider}/{model}"

        async def function(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            await self._enter(key)
            bad = self.bad.get(key)
            if bad == "empty":
                return ModelResponse(parts=[TextPart("")])
            if bad == "unknown_tool":
                return ModelResponse(parts=[ToolCallPart("no_such_tool", {"x": 1})])
            return ModelResponse(parts=[TextPart(answer)])

        async def stream_function(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
            await self._enter(key)
            yield answer
            cut = self._error(self.cuts.get(key))
            if cut is not None:
                raise cut

        return FunctionModel(function=function, stream_function=stream_function, model_name=f"{provider}-{model}")

    def models(self) -> dict[str, dict[str, FunctionModel]]:
        return {p: {m: self.model(p, m) for m in models} for p, models in PROVIDER_MODELS.items()}


def provider_specs(openai_key: str = OPENAI_KEY) -> list[ProviderSpec]:
    return [
        ProviderSpec("ollama", "ollama", "http://127.0.0.1:9/v1", PROVIDER_MODELS["ollama"], timeout=30.0),
        ProviderSpec("openai", "openai", "http://127.0.0.1:9/v1", PROVIDER_MODELS["openai"],
                     api_key=SecretStr(openai_key), timeout=30.0),
    ]


@dataclass
class Env:
    """One engine over fake providers, with the agent a caller would use."""

    engine: LLMProviderFallback
    clock: FakeClock
    fakes: FakeProviders
    store: StateStore
    agent: Agent[None, str]

    async def ask(self, prompt: str = "hi") -> str:
        result = await self.agent.run(prompt)
        return result.output

    async def ask_stream(self, prompt: str = "hi") -> str:
        async with self.agent.run_stream(prompt) as result:
            return "".join([chunk async for chunk in result.stream_text(delta=True)])

    async def stats(self) -> dict[str, Any]:
        return await self.engine.get_provider_stats()

    async def health(self, provider: str) -> dict[str, Any]:
        return (await self.stats())["provider_health"][provider]


@pytest.fixture
def make_env(clock: FakeClock) -> Callable[..., Env]:
    """Build an ``Env``: providers ``ollama`` (m1) then ``openai`` (g1, g2), fake clock, memory store.

    Pass ``store=`` to share one store between several envs (several bot processes) and
    ``fakes=`` to share the same fake providers.
    """

    def build(*, store: StateStore | None = None, failure_cooldown: float = 300, preferred_ttl: float = 1800,
              openai_key: str = OPENAI_KEY, fakes: FakeProviders | None = None, **engine_kwargs: Any) -> Env:
        fakes = fakes if fakes is not None else FakeProviders()
        store = store if store is not None else MemoryStateStore(clock)
        engine = LLMProviderFallback(provider_specs(openai_key), store, failure_cooldown=failure_cooldown,
                                     preferred_ttl=preferred_ttl, clock=clock, models=fakes.models(),
                                     **engine_kwargs)
        agent: Agent[None, str] = Agent(LLMFallbackModel(engine))
        return Env(engine, clock, fakes, store, agent)

    return build

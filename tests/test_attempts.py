"""Issue 7 §3: what an attempt means, from its start to its real end — each case failed before.

In-process fake providers (tests/conftest.py) and a fake clock, except where the HTTP itself is
the point (a truncated SSE stream, "check now"): there a small server on 127.0.0.1 answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pydantic import SecretStr
from pydantic_ai import Agent

from plugins.llm_fallback import (
    AllProvidersFailedError,
    AttemptEvent,
    FailureKind,
    HealthEvent,
    LLMFallbackModel,
    LLMProviderFallback,
    MemoryStateStore,
    ProviderSpec,
    StreamCutError,
)
from tests.conftest import Env, ResponsiveLoop, http_error, wait_until

pytestmark = pytest.mark.timeout(30)


def health_events(env: Env) -> list[HealthEvent]:
    events: list[HealthEvent] = []
    env.engine.add_listener(lambda e: events.append(e) if isinstance(e, HealthEvent) else None)
    return events


async def cool_primary(env: Env) -> None:
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    assert await env.ask() == "openai/g1"
    env.fakes.ok("ollama")


# --- a stream's end is its real end ----------------------------------------------------------------


async def test_a_stream_cut_during_a_probe_is_a_failure_not_a_recovery(make_env, caplog):
    env = make_env()
    events = health_events(env)
    await cool_primary(env)
    env.clock.advance(300)  # half-open: the next request probes ollama
    env.fakes.cut_stream("ollama", lambda: http_error(500, "m1"))

    with caplog.at_level(logging.INFO, logger="llm_fallback"), pytest.raises(StreamCutError) as cut:
        await env.ask_stream()
    assert cut.value.provider == "ollama"
    health = await env.health("ollama")
    assert health["state"] == "cooling"
    assert health["cooldown_multiplier"] == 2 and 599 <= health["cooldown_seconds_left"] <= 600
    assert health["last_error_kind"] == FailureKind.STREAM_CUT.value
    assert [e.kind for e in events] == ["down", "down"]  # never "recovered" in between
    assert not any("recovered" in r.getMessage() for r in caplog.records)


async def test_a_provider_that_always_cuts_streams_backs_off_instead_of_flapping(make_env):
    env = make_env()
    events = health_events(env)
    env.fakes.cut_stream("ollama", lambda: http_error(500, "m1"))
    cooldowns = []
    for _ in range(4):
        with pytest.raises(StreamCutError):
            await env.ask_stream()
        health = await env.health("ollama")
        cooldowns.append(health["cooldown_seconds_left"])
        env.clock.advance(health["cooldown_seconds_left"])
    assert cooldowns == [300, 600, 900, 1200]
    assert "recovered" not in [e.kind for e in events]
    # A real success resets it.
    env.fakes.ok("ollama")
    assert await env.ask_stream() == "ollama/m1"
    assert (await env.health("ollama"))["state"] == "healthy"
    await cool_primary(env)
    assert (await env.health("ollama"))["cooldown_seconds_left"] == 300


async def test_cooldown_growth_is_capped(make_env):
    env = make_env(max_cooldown=700)
    for _ in range(4):
        env.fakes.fail("ollama", lambda: http_error(500, "m1"))
        assert await env.ask() == "openai/g1"
        env.clock.advance((await env.health("ollama"))["cooldown_seconds_left"])
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    await env.ask()
    assert (await env.health("ollama"))["cooldown_seconds_left"] == 700


# --- pydantic-ai's deadlines are the attempt's own ---------------------------------------------------


async def test_request_timeout_fails_over_and_cools_the_hanging_provider(make_env):
    env = make_env(loop_lag=ResponsiveLoop())
    env.fakes.gate("ollama")  # accepts, never answers
    result = await env.agent.run("hi", model_settings={"request_timeout": 0.2})
    assert result.output == "openai/g1"
    health = await env.health("ollama")
    assert health["state"] == "cooling" and health["last_error_kind"] == FailureKind.TIMEOUT.value


async def test_first_event_timeout_fails_a_stream_over(make_env):
    env = make_env(loop_lag=ResponsiveLoop())
    env.fakes.gate("ollama")
    async with env.agent.run_stream("hi", model_settings={"first_event_timeout": 0.2}) as result:
        text = "".join([c async for c in result.stream_text(delta=True)])
    assert text == "openai/g1"
    assert (await env.health("ollama"))["last_error_kind"] == FailureKind.TIMEOUT.value


# --- status codes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [(408, FailureKind.TIMEOUT), (409, FailureKind.SERVER)])
async def test_408_and_409_fail_over(make_env, status, kind):
    env = make_env()
    env.fakes.fail("ollama", lambda: http_error(status, "m1"))
    assert await env.ask() == "openai/g1"
    assert (await env.health("ollama"))["last_error_kind"] == kind.value


# --- replies that cannot be used ----------------------------------------------------------------------


async def test_an_empty_reply_fails_over_and_repeats_cool_the_provider(make_env):
    env = make_env()
    env.fakes.bad_reply("ollama", "empty")
    for n in range(1, 4):
        assert await env.ask() == "openai/g1"
        assert env.fakes.count("ollama") == n
    health = await env.health("ollama")
    assert health["state"] == "cooling" and health["last_error_kind"] == FailureKind.EMPTY.value
    assert await env.ask() == "openai/g1"
    assert env.fakes.count("ollama") == 3  # skipped while cooling


async def test_output_the_agent_cannot_use_is_asked_again_of_the_next_provider(make_env):
    env = make_env()
    env.fakes.bad_reply("ollama", "unknown_tool")
    for n in range(1, 4):
        assert await env.ask() == "openai/g1"
        assert env.fakes.count("ollama") == n  # once per request: the agent's retry went to openai
    health = await env.health("ollama")
    assert health["state"] == "cooling" and health["last_error_kind"] == FailureKind.MALFORMED.value


# --- probe leases: one per cooldown, taken only when the provider is really tried -------------------------


async def test_a_missing_model_is_probed_by_one_request_only(make_env):
    env = make_env()
    await env.engine.report_provider_failure("ollama", Exception("down"))
    env.fakes.fail("openai", lambda: http_error(404, "g1"), "g1")
    assert await env.ask() == "openai/g2"  # g1 missing: cooled as a model
    assert (await env.health("openai"))["unavailable_models"] == ["g1"]
    env.clock.advance(300)
    await env.engine.report_provider_failure("ollama", Exception("still down"))
    env.fakes.ok("openai", "g1")
    slow = env.fakes.gate("openai", "g1")
    probe = asyncio.create_task(env.ask("A"))
    await wait_until(lambda: env.fakes.count("openai", "g1") == 2)
    others = [await env.ask(f"B{i}") for i in range(5)]
    assert others == ["openai/g2"] * 5
    assert env.fakes.count("openai", "g1") == 2  # only the probe reached the missing model
    slow.set()
    assert await probe == "openai/g1"
    assert (await env.health("openai"))["unavailable_models"] == []


class CountingStore(MemoryStateStore):
    def __init__(self, clock):
        super().__init__(clock)
        self.calls: list[str] = []

    async def get_many(self, keys):
        self.calls.append("get_many")
        return await super().get_many(keys)

    async def set(self, key, value, ttl, *, only_if_absent=False):
        self.calls.append(f"set {key}")
        return await super().set(key, value, ttl, only_if_absent=only_if_absent)


async def test_no_probe_lease_for_a_provider_a_healthier_one_ahead_will_serve(make_env, clock):
    store = CountingStore(clock)
    env = make_env(store=store)
    await env.engine.report_provider_failure("openai", Exception("down"))
    clock.advance(300)  # openai half-open, ollama healthy and first
    assert await env.ask() == "ollama/m1"  # warms `preferred`
    store.calls.clear()
    assert await env.ask() == "ollama/m1"
    assert store.calls == ["get_many"], "one store round trip per request on the healthy path"
    assert (await env.health("openai"))["state"] == "half_open"
    # When ollama fails, the request reaches openai and probes it then.
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    assert await env.ask() == "openai/g1"
    assert (await env.health("openai"))["state"] == "healthy"


# --- a busy event loop blames nobody --------------------------------------------------------------------


async def _ask_while_the_loop_is_blocked(env: Env, block: float) -> str:
    async def hog() -> None:
        await wait_until(lambda: env.fakes.count("ollama") == 1)
        time.sleep(block)  # noqa: ASYNC251 - this process's own CPU work, not the provider's fault

    hogger = asyncio.create_task(hog())
    result = await env.agent.run("hi", model_settings={"request_timeout": 0.3})
    await hogger
    return result.output


async def test_a_timeout_explained_by_event_loop_lag_fails_over_without_cooldown(make_env, caplog):
    env = make_env()
    env.fakes.gate("ollama")
    with caplog.at_level(logging.WARNING, logger="llm_fallback"):
        assert await _ask_while_the_loop_is_blocked(env, block=0.25) == "openai/g1"
    assert (await env.health("ollama"))["state"] == "unknown"  # not cooling: our loop was to blame
    assert any("event loop lagged" in r.getMessage() for r in caplog.records)


async def test_the_same_timeout_with_a_responsive_loop_cools_the_provider(make_env):
    env = make_env(loop_lag=ResponsiveLoop())
    env.fakes.gate("ollama")
    assert await _ask_while_the_loop_is_blocked(env, block=0.0) == "openai/g1"
    assert (await env.health("ollama"))["state"] == "cooling"


# --- admission ------------------------------------------------------------------------------------------


async def test_llm_requests_in_flight_are_bounded_and_the_rest_wait(make_env):
    env = make_env(max_concurrent_requests=2)
    gate = env.fakes.gate("ollama")
    tasks = [asyncio.create_task(env.ask(f"q{i}")) for i in range(6)]
    await wait_until(lambda: env.fakes.count("ollama") == 2)
    for _ in range(50):
        await asyncio.sleep(0)
    assert env.fakes.count("ollama") == 2  # the others wait for a slot: no timeout, no fallback
    gate.set()
    assert await asyncio.gather(*tasks) == ["ollama/m1"] * 6
    assert env.fakes.count("openai") == 0


# --- over HTTP: a truncated stream, and "check now" ------------------------------------------------------


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


def _completion(text: str) -> dict:
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class TinyProvider:
    """An OpenAI-compatible chat endpoint only (no /models, no /api/tags) on 127.0.0.1."""

    def __init__(self, name: str, *, truncate: bool = False, html: bool = False):
        self.name, self.truncate, self.html = name, truncate, html
        self.paths: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        body = await request.json()
        if self.html:
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if not body.get("stream"):
            return web.json_response(_completion(f"answer from {self.name}"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk(f"answer from {self.name}"))
        if not self.truncate:
            await response.write(_chunk(None, "stop") + b"data: [DONE]\n\n")
        await response.write_eof()  # truncated: a clean end without a finish reason or [DONE]
        return response

    async def other(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        return web.Response(status=404)

    async def __aenter__(self) -> TinyProvider:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_route("*", "/{tail:.*}", self.other)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def tiny_engine(clock) -> AsyncIterator:
    made = []

    async def build(primary: TinyProvider, fallback: TinyProvider) -> LLMProviderFallback:
        engine = LLMProviderFallback(
            [ProviderSpec("ollama", "ollama", primary.url, ("m1",), timeout=5, connect_timeout=1),
             ProviderSpec("openai", "openai", fallback.url, ("g1",), api_key=SecretStr("sk-test-tiny-123456"),
                          timeout=5, connect_timeout=1)],
            MemoryStateStore(clock), clock=clock)
        made.append(engine)
        return engine

    yield build
    for engine in made:
        await engine.aclose()


async def test_a_stream_that_ends_without_a_finish_reason_is_a_cut_not_an_answer(tiny_engine):
    async with TinyProvider("ollama", truncate=True) as primary, TinyProvider("openai") as fallback:
        engine = await tiny_engine(primary, fallback)
        agent = Agent(LLMFallbackModel(engine))
        with pytest.raises(StreamCutError):
            async with agent.run_stream("hi") as result:
                _ = [c async for c in result.stream_text(delta=True)]
        stats = await engine.get_provider_stats()
        assert stats["provider_health"]["ollama"]["state"] == "cooling"
        assert stats["provider_health"]["ollama"]["last_error_kind"] == FailureKind.STREAM_CUT.value
        # The restart a caller makes goes to the fallback, which ends its stream properly.
        async with agent.run_stream("hi") as result:
            assert "".join([c async for c in result.stream_text(delta=True)]) == "answer from openai"


async def test_check_now_makes_a_real_completion_and_needs_no_cheap_endpoint(tiny_engine):
    async with TinyProvider("ollama") as primary, TinyProvider("openai", html=True) as fallback:
        engine = await tiny_engine(primary, fallback)
        await engine.report_provider_failure("ollama", Exception("was down"))
        result = await engine.check_providers(timeout=3)
        assert result["ollama"] is None  # serves chat; it has no /api/tags and that does not matter
        assert primary.paths == ["/v1/chat/completions"]
        assert result["openai"] is not None  # 200 with HTML is not a working provider
        stats = await engine.get_provider_stats()
        assert stats["provider_health"]["ollama"]["state"] == "healthy"
        assert stats["provider_health"]["openai"]["state"] == "cooling"


async def test_all_failed_lists_every_attempt(make_env):
    env = make_env()
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    env.fakes.fail("openai", lambda: http_error(503, "g1"))
    events: list[AttemptEvent] = []
    env.engine.add_listener(lambda e: events.append(e) if isinstance(e, AttemptEvent) else None)
    with pytest.raises(AllProvidersFailedError) as failed:
        await env.ask()
    assert [(a.provider, a.model) for a in failed.value.attempts] == [("ollama", "m1"), ("openai", "g1")]
    assert [(e.provider, e.outcome, e.blamed) for e in events] == [
        ("ollama", "server_error", True), ("openai", "server_error", True)]


# --- the provider's timeout is what one generation may take ---------------------------------------------------


def slow_engine(clock, chunk_gap: float, chunks: int) -> LLMProviderFallback:
    """ollama (timeout 0.5 s) streams `chunks` chunks `chunk_gap` apart; openai answers at once."""
    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.models.function import FunctionModel

    async def slow_stream(messages, info):
        for n in range(chunks):
            yield f"chunk{n} "
            await asyncio.sleep(chunk_gap)

    async def slow_answer(messages, info):
        await asyncio.sleep(chunk_gap * chunks)
        return ModelResponse(parts=[TextPart("ollama, finally")])

    async def quick(messages, info):
        return ModelResponse(parts=[TextPart("openai/g1")])

    async def quick_stream(messages, info):
        yield "openai/g1"

    models = {"ollama": {"m1": FunctionModel(slow_answer, stream_function=slow_stream, model_name="o")},
              "openai": {"g1": FunctionModel(quick, stream_function=quick_stream, model_name="g")}}
    specs = [ProviderSpec("ollama", "ollama", "http://127.0.0.1:9/v1", ("m1",), timeout=0.5),
             ProviderSpec("openai", "openai", "http://127.0.0.1:9/v1", ("g1",), api_key=SecretStr("sk-test-1234567"))]
    return LLMProviderFallback(specs, MemoryStateStore(clock), clock=clock, models=models, loop_lag=ResponsiveLoop())


async def test_a_generation_longer_than_the_providers_timeout_falls_over(clock):
    engine = slow_engine(clock, chunk_gap=0.2, chunks=10)  # 2 s for a provider allowed 0.5 s
    started = time.monotonic()
    assert (await Agent(LLMFallbackModel(engine)).run("hi")).output == "openai/g1"
    assert time.monotonic() - started < 1.5
    health = (await engine.get_provider_stats())["provider_health"]["ollama"]
    assert health["state"] == "cooling" and health["last_error_kind"] == "timeout"
    await engine.aclose()


async def test_a_stream_still_going_past_the_providers_timeout_is_cut(clock):
    """Chunks 0.2 s apart never stall the HTTP read, but the whole generation has 1 s: the stream is cut."""
    from tests.test_e2e_streaming import PacedLLM

    async with PacedLLM("ollama") as primary, TinyProvider("openai") as fallback:
        primary.pace = 0.2
        primary.reply = " ".join(f"word{n}" for n in range(40))  # about 8 s of streaming
        engine = LLMProviderFallback(
            [ProviderSpec("ollama", "ollama", primary.v1_url, ("m1",), timeout=1, connect_timeout=1),
             ProviderSpec("openai", "openai", fallback.url, ("g1",), api_key=SecretStr("sk-test-tiny-123456"),
                          timeout=5, connect_timeout=1)],
            MemoryStateStore(clock), clock=clock, loop_lag=ResponsiveLoop())
        started = time.monotonic()
        with pytest.raises(StreamCutError) as cut:
            async with Agent(LLMFallbackModel(engine)).run_stream("hi") as result:
                _ = [c async for c in result.stream_text(delta=True)]
        assert time.monotonic() - started < 3, "cut at the deadline, not after the whole stream"
        assert cut.value.provider == "ollama" and "timed out" in cut.value.error
        assert (await engine.get_provider_stats())["provider_health"]["ollama"]["state"] == "cooling"
        await engine.aclose()


async def test_a_provider_that_cuts_streams_is_not_announced_back_by_a_short_call(make_env):
    """Thread names (short, not streamed) succeed while chat streams are cut: no "recovered" in between."""
    env = make_env()
    events = health_events(env)
    env.fakes.cut_stream("ollama", lambda: http_error(500, "m1"))
    with pytest.raises(StreamCutError):
        await env.ask_stream()
    env.clock.advance(301)  # half-open
    assert await env.ask() == "ollama/m1"  # a short call goes through...
    assert (await env.health("ollama"))["state"] != "healthy", "...but it is not what failed"
    env.clock.advance(1)
    with pytest.raises(StreamCutError):
        await env.ask_stream()
    assert [e.kind for e in events] == ["down", "down"]
    env.fakes.ok("ollama")
    env.clock.advance(601)
    assert await env.ask_stream() == "ollama/m1"  # a stream that ends well: back
    assert [e.kind for e in events] == ["down", "down", "recovered"]

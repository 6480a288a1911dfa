"""The classification table (DESIGN.md, "Error classification") over real HTTP.

Two fake OpenAI-compatible servers on 127.0.0.1 (`tests/fakes/fake_llm.py`): the primary is
provider "ollama", the fallback provider "openai". Real `AsyncOpenAI` clients, real sockets,
real pydantic-ai agents on `LLMFallbackModel`. Each test asserts what the user gets (the answer
text names the server that answered) and what the engine remembers (`get_provider_stats()`).

Time never really passes: the engine runs on a fake clock. The only real waits are the
1-second read timeouts of the "hang" cases and the 0.3-second connect timeouts of a black-holed host.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_ai import Agent
from pydantic_ai.exceptions import ContentFilterError, ModelAPIError, ModelHTTPError, ModelRequestRejectedError
from pydantic_ai.settings import ModelSettings

from plugins.llm_fallback import (
    AllProvidersFailedError,
    HealthEvent,
    StreamCutError,
    LLMFallbackModel,
    LLMProviderFallback,
    MemoryStateStore,
    ModelFactory,
    ProviderSpec,
)
from tests.conftest import ResponsiveLoop, wait_until
from tests.fakes.fake_llm import FakeLLM, streamed

SECRET = "sk-test-SECRET-0123456789abcdef"
TIMEOUT = 1.0
CONNECT_TIMEOUT = 0.5


class Clock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> Clock:
    return Clock()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FakeLLM, FakeLLM]]:
    """(primary, fallback): FakeLLM "ollama" and FakeLLM "openai", both healthy."""
    primary, fallback = FakeLLM("ollama"), FakeLLM("openai")
    await primary.start()
    await fallback.start()
    try:
        yield primary, fallback
    finally:
        await primary.stop()
        await fallback.stop()


def spec(name: str, fake: FakeLLM, models: Sequence[str], *, timeout: float = TIMEOUT,
         key: str | None = SECRET) -> ProviderSpec:
    kind = "ollama" if name == "ollama" else "openai"
    api_key = SecretStr(key) if key and kind == "openai" else None
    return ProviderSpec(name, kind, fake.v1_url, tuple(models), api_key=api_key, timeout=timeout,
                        connect_timeout=CONNECT_TIMEOUT)


def build_engine(primary: FakeLLM, fallback: FakeLLM, clock: Clock, *, order: Sequence[str] = ("ollama", "openai"),
                 ollama_models: Sequence[str] = ("m1",), openai_models: Sequence[str] = ("g1",),
                 timeout: float = TIMEOUT, recovery_probe_interval: float = 0.0) -> LLMProviderFallback:
    servers = {"ollama": (primary, ollama_models), "openai": (fallback, openai_models)}
    specs = [spec(name, servers[name][0], servers[name][1], timeout=timeout) for name in order]
    return LLMProviderFallback(specs, MemoryStateStore(clock), clock=clock, failure_cooldown=300,
                               loop_lag=ResponsiveLoop(),  # timeouts here are the server's, whatever the CI load
                               recovery_probe_interval=recovery_probe_interval)


@pytest.fixture
async def engines() -> AsyncIterator[list[LLMProviderFallback]]:
    """Engines built by a test, closed at its end (their HTTP pools)."""
    made: list[LLMProviderFallback] = []
    yield made
    for engine in made:
        await engine.aclose()


@pytest.fixture
def make(servers: tuple[FakeLLM, FakeLLM], fake_clock: Clock, engines: list[LLMProviderFallback]):
    def build(**kwargs: Any) -> tuple[LLMProviderFallback, Agent[None, str]]:
        engine = build_engine(*servers, fake_clock, **kwargs)
        engines.append(engine)
        return engine, Agent(LLMFallbackModel(engine))

    return build


async def ask(agent: Agent[None, str], prompt: str = "hi") -> str:
    return (await agent.run(prompt)).output


async def ask_stream(agent: Agent[None, str], prompt: str = "hi") -> str:
    async with agent.run_stream(prompt) as result:
        return "".join([chunk async for chunk in result.stream_text(delta=True)])


async def health(engine: LLMProviderFallback, provider: str) -> dict[str, Any]:
    return (await engine.get_provider_stats())["provider_health"][provider]


ASKERS = [pytest.param(ask, id="run"), pytest.param(ask_stream, id="run_stream")]


# --- connection refused ------------------------------------------------------------------------


@pytest.mark.parametrize("asker", ASKERS)
async def test_refused_primary_fails_over_and_cools_down(make, servers, asker) -> None:
    primary, fallback = servers
    engine, agent = make()
    await primary.stop()

    assert await asker(agent) == "answer from openai"
    h = await health(engine, "ollama")
    assert h["state"] == "cooling"
    assert h["cooldown_seconds_left"] == 300
    assert h["last_error_kind"] == "connection"
    assert (await health(engine, "openai"))["state"] == "healthy"
    assert fallback.count() == 1

    # The primary is back on its port, but it is cooling: the next request does not touch it.
    await primary.start(primary.port)
    assert await asker(agent) == "answer from openai"
    assert primary.count() == 0
    assert fallback.count() == 2
    assert (await engine.get_provider_stats())["preferred_provider"] == "openai"


async def test_refused_primary_is_used_again_once_its_cooldown_is_over(make, servers, fake_clock) -> None:
    primary, fallback = servers
    engine, agent = make()
    await primary.stop()
    assert await ask(agent) == "answer from openai"
    await primary.start(primary.port)

    fake_clock.advance(299)
    assert await ask(agent) == "answer from openai"
    assert primary.count() == 0
    fake_clock.advance(2)  # cooldown over: this request probes the primary, which answers
    assert await ask(agent) == "answer from ollama"
    assert await ask(agent) == "answer from ollama"
    assert primary.count() == 2
    stats = await engine.get_provider_stats()
    assert stats["preferred_provider"] == "ollama"
    assert stats["provider_health"]["ollama"]["state"] == "healthy"


# --- connect timeout (a host that never answers the SYN) -----------------------------------------------


@pytest.fixture
def blackhole_url() -> Iterator[str]:
    """A URL whose TCP connects hang: a listening socket whose accept queue is full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}/v1"
    for sock in [*fillers, listener]:
        sock.close()


def blackholed_engine(url: str, fallback: FakeLLM, clock: Clock) -> LLMProviderFallback:
    specs = [
        ProviderSpec("ollama", "ollama", url, ("m1",), timeout=5.0, connect_timeout=0.3),
        ProviderSpec("openai", "openai", fallback.v1_url, ("g1",), api_key=SecretStr(SECRET), timeout=5.0,
                     connect_timeout=0.3),
    ]
    return LLMProviderFallback(specs, MemoryStateStore(clock), clock=clock, failure_cooldown=300,
                               loop_lag=ResponsiveLoop())  # timeouts here are the server's, whatever the CI load


async def test_connect_timeout_fails_over_after_the_connect_timeout(blackhole_url, servers, fake_clock,
                                                                    engines) -> None:
    _, fallback = servers
    engine = blackholed_engine(blackhole_url, fallback, fake_clock)
    engines.append(engine)
    agent = Agent(ModelFactory(engine).create())

    # connect_timeout is 0.3 s, the read timeout 5 s: the dead host costs the former
    assert await asyncio.wait_for(ask(agent), 2.5) == "answer from openai"
    h = await health(engine, "ollama")
    assert h["state"] == "cooling"
    assert h["last_error_kind"] in ("timeout", "connection")


async def test_connect_timeout_survives_a_request_timeout_setting(blackhole_url, servers, fake_clock,
                                                                  engines) -> None:
    _, fallback = servers
    engine = blackholed_engine(blackhole_url, fallback, fake_clock)
    engines.append(engine)
    # A caller's timeout (the seed's custom settings; the moderation and name presets use 30 s) bounds
    # the generation; the dead host must still cost only the connect timeout, not the 3 s.
    agent = Agent(ModelFactory(engine).create(model_settings=ModelSettings(timeout=3.0)))

    assert await asyncio.wait_for(ask(agent), 2.0) == "answer from openai"
    assert (await health(engine, "ollama"))["state"] == "cooling"


# --- read timeout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("asker", ASKERS)
async def test_hanging_primary_times_out_and_fails_over(make, servers, asker) -> None:
    primary, fallback = servers
    engine, agent = make()
    primary.mode = "hang"

    assert await asker(agent) == "answer from openai"
    assert primary.count() == 1
    h = await health(engine, "ollama")
    assert h["state"] == "cooling"
    assert h["last_error_kind"] == "timeout"
    assert h["cooldown_seconds_left"] == 300


# --- server errors and malformed bodies ---------------------------------------------------------


@pytest.mark.parametrize("asker", ASKERS)
@pytest.mark.parametrize(("mode", "kind"), [("http500", "server_error"), ("garbage", "malformed_response")])
async def test_server_error_and_garbage_fail_over(make, servers, asker, mode, kind) -> None:
    primary, fallback = servers
    engine, agent = make()
    primary.mode = mode

    assert await asker(agent) == "answer from openai"
    h = await health(engine, "ollama")
    assert h["state"] == "cooling"
    assert h["last_error_kind"] == kind
    assert h["cooldown_seconds_left"] == 300
    assert fallback.count() == 1


# --- 429 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("asker", ASKERS)
async def test_rate_limited_with_retry_after_cools_for_that_long(make, servers, asker, fake_clock) -> None:
    primary, fallback = servers
    engine, agent = make()
    primary.set_mode("http429", retry_after=7)

    assert await asker(agent) == "answer from openai"
    h = await health(engine, "ollama")
    assert h["state"] == "cooling"
    assert h["last_error_kind"] == "rate_limited"
    assert 6 <= h["cooldown_seconds_left"] <= 7
    assert primary.count() == 1  # the SDK did not wait and retry on its own

    # After the 7 s the primary is half-open and, answering again, serves the next request.
    primary.mode = "ok"
    fake_clock.advance(8)
    assert await asker(agent) == "answer from ollama"
    assert (await health(engine, "ollama"))["state"] == "healthy"


async def test_rate_limited_without_retry_after_cools_default(make, servers) -> None:
    primary, _ = servers
    engine, agent = make()
    primary.set_mode("http429", retry_after=None)

    assert await ask(agent) == "answer from openai"
    h = await health(engine, "ollama")
    assert h["last_error_kind"] == "rate_limited"
    assert h["cooldown_seconds_left"] == 300


async def test_rate_limited_retry_after_is_bounded(make, servers) -> None:
    primary, _ = servers
    engine, agent = make()
    primary.set_mode("http429", retry_after=10 * 24 * 3600)

    assert await ask(agent) == "answer from openai"
    assert (await health(engine, "ollama"))["cooldown_seconds_left"] == 3600


# --- 401 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("asker", ASKERS)
async def test_unauthorized_fails_over_logs_setting_and_never_leaks_key(make, servers, asker, caplog) -> None:
    ollama_server, openai_server = servers
    engine, agent = make(order=("openai", "ollama"))
    openai_server.mode = "http401"
    caplog.set_level(logging.DEBUG)

    assert await asker(agent) == "answer from ollama"
    stats = await engine.get_provider_stats()
    h = stats["provider_health"]["openai"]
    assert h["state"] == "cooling"
    assert h["last_error_kind"] == "auth"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("OPENAI_API_KEY" in r.getMessage() for r in errors), [r.getMessage() for r in errors]

    # The key went out in the Authorization header (the fake saw a real request)...
    assert openai_server.count() == 1
    # ...but it appears nowhere we show: logs, status, errors. Nor its masked echo's prefix.
    assert SECRET not in caplog.text
    assert "SECRET-0123" not in caplog.text
    assert SECRET not in repr(stats)

    # An exception a caller may see carries no key either.
    ollama_server.mode = "http500"
    with pytest.raises(AllProvidersFailedError) as excinfo:
        await asker(agent)
    text = str(excinfo.value) + repr(excinfo.value.attempts)
    chain: BaseException | None = excinfo.value
    while chain is not None:
        text += str(chain) + repr(chain)
        chain = chain.__cause__ or chain.__context__
    assert SECRET not in text
    assert SECRET not in caplog.text
    assert SECRET not in repr(await engine.get_provider_stats())


async def test_forbidden_is_an_auth_failure(make, servers) -> None:
    primary, _ = servers
    engine, agent = make()
    primary.mode = "http403"

    assert await ask(agent) == "answer from openai"
    h = await health(engine, "ollama")
    assert h["state"] == "cooling"
    assert h["last_error_kind"] == "auth"


# --- 404: next model of the same provider ---------------------------------------------------------------


@pytest.mark.parametrize("asker", ASKERS)
async def test_model_not_found_moves_to_next_model_of_same_provider(make, servers, asker) -> None:
    primary, fallback = servers
    primary.models = ["m2"]
    engine, agent = make(ollama_models=("m1", "m2"))

    assert await asker(agent) == "answer from ollama"
    assert [r["model"] for r in primary.requests] == ["m1", "m2"]
    h = await health(engine, "ollama")
    assert h["state"] == "healthy"
    assert h["unavailable_models"] == ["m1"]
    assert fallback.count() == 0

    assert await asker(agent) == "answer from ollama"
    assert primary.requests[-1]["model"] == "m2"
    assert primary.count() == 3
    assert fallback.count() == 0


async def test_every_model_missing_moves_to_next_provider(make, servers) -> None:
    primary, fallback = servers
    primary.models = ["something-else"]
    engine, agent = make(ollama_models=("m1", "m2"))

    assert await ask(agent) == "answer from openai"
    assert [r["model"] for r in primary.requests] == ["m1", "m2"]
    h = await health(engine, "ollama")
    assert h["state"] == "cooling"  # the server is fine, but none of those models is there: it can't answer
    assert h["failures"] == 0 and h["unavailable_models"] == ["m1", "m2"]

    assert await ask(agent) == "answer from openai"
    assert primary.count() == 2  # not asked again while its models are cooling


@pytest.mark.parametrize("mode", ["http500", "hang"])
async def test_provider_failure_skips_its_other_models(make, servers, mode) -> None:
    primary, fallback = servers
    engine, agent = make(ollama_models=("m1", "m2"))
    primary.mode = mode

    assert await ask(agent) == "answer from openai"
    assert [r["model"] for r in primary.requests] == ["m1"]
    assert (await health(engine, "ollama"))["unavailable_models"] == []


# --- the request itself is rejected ---------------------------------------------------------------------


@pytest.mark.parametrize("asker", ASKERS)
@pytest.mark.parametrize("mode", ["http400", "content_filter"])
async def test_bad_request_and_content_filter_reach_the_caller(make, servers, asker, mode) -> None:
    """A content-filter refusal is never routed around; a 400 every provider gives is the request's own."""
    primary, fallback = servers
    engine, agent = make()
    primary.mode = mode
    fallback.mode = mode

    with pytest.raises((ModelHTTPError, ContentFilterError)) as excinfo:
        await asker(agent)
    if mode == "http400":
        assert isinstance(excinfo.value, ModelRequestRejectedError)
        assert excinfo.value.status_code == 400
    else:  # the filter's 400 arrives as the refusal it is (the bot shows the refusal, not the apology)
        assert isinstance(excinfo.value, ContentFilterError)
        assert isinstance(excinfo.value.__cause__, ModelHTTPError) and excinfo.value.__cause__.status_code == 400
    assert not isinstance(excinfo.value, AllProvidersFailedError)
    assert fallback.count() == (1 if mode == "http400" else 0)
    assert primary.count() == 1
    h = await health(engine, "ollama")
    assert h["state"] == "healthy"
    assert h["cooldown_seconds_left"] == 0


async def test_truncated_body_of_non_streamed_answer_fails_over(make, servers) -> None:
    primary, fallback = servers
    engine, agent = make()
    primary.mode = "cut_stream"  # non-streamed: half the announced body, then the connection drops

    assert await ask(agent) == "answer from openai"  # nothing reached the user yet: fall back
    h = await health(engine, "ollama")
    assert h["state"] == "cooling"
    assert h["last_error_kind"] in ("connection", "malformed_response")


# --- stream cut after the first token ---------------------------------------------------------------------


async def test_stream_cut_after_first_token_raises_and_cools_primary(make, servers) -> None:
    primary, fallback = servers
    engine, agent = make()
    primary.mode = "cut_stream"

    received: list[str] = []
    with pytest.raises(StreamCutError) as excinfo:
        async with agent.run_stream("hi") as result:
            async for chunk in result.stream_text(delta=True, debounce_by=None):
                received.append(chunk)
    assert excinfo.value.provider == "ollama"  # the caller learns who broke off, and may restart
    assert received and "answer from ollama".startswith("".join(received))  # half an answer was out
    assert fallback.count() == 0  # and it was not restarted elsewhere
    assert primary.count() == 1
    h = await health(engine, "ollama")
    assert h["state"] == "cooling"
    assert h["last_error_kind"] == "stream_cut"


async def test_a_malformed_chunk_mid_stream_is_a_cut(make, servers) -> None:
    primary, fallback = servers
    engine, agent = make()
    primary.mode = "malformed_chunk"  # the first piece, then an event whose JSON is cut in half (llmock)

    with pytest.raises(StreamCutError):
        await ask_stream(agent)
    h = await health(engine, "ollama")
    assert (h["state"], h["last_error_kind"]) == ("cooling", "stream_cut")
    assert fallback.count() == 0  # the caller restarts the reply, the model does not


async def test_a_stream_stalled_past_the_timeout_is_a_cut(make, servers) -> None:
    """A stream that stops after its first piece (llmock's stall) is cut at the provider's timeout; had the
    stall been sat through, the stream would end well 30 s later and nothing would be raised."""
    primary, fallback = servers
    engine, agent = make()
    primary.set_mode("stall_stream", first_token_delay=30)

    with pytest.raises(StreamCutError):
        await ask_stream(agent)
    h = await health(engine, "ollama")
    assert (h["state"], h["last_error_kind"]) == ("cooling", "stream_cut")


async def test_streams_that_fail_before_their_first_chunk_are_not_recovered_by_a_short_probe(
        make, servers, fake_clock) -> None:
    primary, fallback = servers
    engine, agent = make(recovery_probe_interval=5)
    events: list[object] = []
    engine.add_listener(events.append)
    primary.mode, primary.affects = "garbage", streamed  # every stream starts with garbage; short calls answer

    assert await ask_stream(agent) == "answer from openai"
    assert (await health(engine, "ollama"))["state"] == "cooling"
    fake_clock.advance(5)
    assert await engine.background.run_once() == ["recovery:ollama"]
    assert (await health(engine, "ollama"))["state"] == "cooling", "its streams still fail"
    assert [e.kind for e in events if isinstance(e, HealthEvent)] == ["down"]


async def test_a_recovery_probe_of_a_hung_provider_gives_up_at_the_providers_own_timeout(
        make, servers, fake_clock) -> None:
    """The checks' own bound is 10 s; a probe of a provider with a 1 s timeout waits 1 s. Waiting longer would
    outlive the checker lease (timeout + 5 s): a user request or another process would probe the hung provider."""
    primary, fallback = servers
    engine, agent = make(recovery_probe_interval=5)
    primary.mode = "hang"
    assert await ask(agent) == "answer from openai"
    fake_clock.advance(5)

    assert await asyncio.wait_for(engine.background.run_once(), 8) == ["recovery:ollama"]  # 10 s before
    h = await health(engine, "ollama")
    assert h["state"] == "cooling"
    assert "timed out" in h["last_error"] and h["last_error"].endswith("[recovery probe]"), h["last_error"]


async def test_callers_own_error_inside_a_stream_blames_no_provider(make, servers) -> None:
    primary, fallback = servers
    engine, agent = make()

    with pytest.raises(KeyError):
        async with agent.run_stream("hi") as result:
            async for _ in result.stream_text(delta=True, debounce_by=None):
                raise KeyError("a bug in the handler")
    await assert_primary_not_blamed(engine, fallback)


async def assert_primary_not_blamed(engine, fallback) -> None:
    """Nothing recorded against the primary, and the fallback never asked."""
    h = await health(engine, "ollama")
    assert h["state"] in ("healthy", "unknown")  # unknown: it never got to answer (a cancel before its reply)
    assert h["failures"] == 0 and h["cooldown_seconds_left"] == 0
    assert h["last_error_kind"] is None
    assert fallback.count() == 0


# --- cancellation ---------------------------------------------------------------------------------------------


async def test_cancelled_request_records_nothing(make, servers) -> None:
    primary, fallback = servers
    engine, agent = make(timeout=5.0)
    primary.mode = "hang"

    task = asyncio.create_task(ask(agent))
    await wait_until(lambda: primary.count() > 0, rounds=200, interval=0.01)
    assert primary.count() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await assert_primary_not_blamed(engine, fallback)


async def test_cancelled_stream_after_first_token_records_nothing(make, servers) -> None:
    primary, fallback = servers
    engine, agent = make()
    first_token = asyncio.Event()

    async def consume() -> None:
        async with agent.run_stream("hi") as result:
            async for _ in result.stream_text(delta=True, debounce_by=None):
                first_token.set()
                await asyncio.Event().wait()  # the user goes away mid-answer

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_primary_not_blamed(engine, fallback)


# --- everything down -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("asker", ASKERS)
async def test_all_providers_down_raises_one_runtime_error(make, servers, asker, caplog) -> None:
    primary, fallback = servers
    engine, agent = make()
    await primary.stop()
    await fallback.stop()
    caplog.set_level(logging.INFO)

    with pytest.raises(AllProvidersFailedError) as excinfo:
        await asker(agent)
    assert isinstance(excinfo.value, RuntimeError)
    attempts = excinfo.value.attempts
    assert len(attempts) >= 2
    assert {a.provider for a in attempts} == {"ollama", "openai"}
    assert "ollama" in str(excinfo.value) and "openai" in str(excinfo.value)
    assert any(r.levelno == logging.ERROR and "❌ All LLM providers failed!" in r.getMessage()
               for r in caplog.records)
    stats = await engine.get_provider_stats()
    assert stats["provider_health"]["ollama"]["state"] == "cooling"
    assert stats["provider_health"]["openai"]["state"] == "cooling"


# --- SDK retries are off ----------------------------------------------------------------------------------------


async def test_no_sdk_retries_one_request_per_failing_call(make, servers, fake_clock) -> None:
    primary, fallback = servers
    engine, agent = make()
    primary.mode = "http500"

    for n in range(1, 4):
        assert await ask(agent) == "answer from openai"
        assert primary.count() == n  # exactly one request per call, no SDK retry
        fake_clock.advance(3601)  # past the (growing) cooldown: the next call probes the primary again
    assert fallback.count() == 3


# --- cost of the first fallback ----------------------------------------------------------------------------------


async def test_first_fallback_cost_and_no_primary_traffic_during_cooldown(make, servers) -> None:
    primary, fallback = servers

    # A healthy call (warm: the second of two) as the baseline.
    _, healthy_agent = make()
    await ask(healthy_agent)
    started = time.perf_counter()
    assert await ask(healthy_agent) == "answer from ollama"
    healthy = time.perf_counter() - started

    engine, agent = make()
    await ask(agent)  # warm the pools of this engine as well
    primary.reset_counts()
    await primary.stop()
    started = time.perf_counter()
    assert await ask(agent) == "answer from openai"
    first_fallback = time.perf_counter() - started
    print(f"\nFIRST FALLBACK (primary refusing): {first_fallback * 1000:.1f} ms vs healthy call "
          f"{healthy * 1000:.1f} ms -> added {(first_fallback - healthy) * 1000:.1f} ms")

    await primary.start(primary.port)  # listening again, yet cooling: must not be called
    for _ in range(2, 21):
        assert await ask(agent) == "answer from openai"
    assert primary.count() == 0
    assert (await health(engine, "ollama"))["state"] == "cooling"


# --- one connection pool per provider ----------------------------------------------------------------------------


async def test_factory_models_share_one_client_per_provider(servers, fake_clock, engines) -> None:
    primary, _ = servers
    engine = build_engine(*servers, fake_clock)
    engines.append(engine)
    factory = ModelFactory(engine)
    client = engine.clients["ollama"].client

    for i in range(10):
        model = factory.create(context=f"call-{i}")
        assert await ask(Agent(model)) == "answer from ollama"
        assert engine.clients["ollama"].client is client
        # the model's own ollama and openai models talk through the engine's clients
        assert model.models[0].client is client
        assert model.models[1].client is engine.clients["openai"].client
    assert primary.count() == 10

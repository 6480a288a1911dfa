"""Self-check of the test fakes, through the real openai SDK, pydantic-ai and redis-py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pydantic
import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
from pydantic_ai import Agent
from pydantic_ai import exceptions as pai_exc
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.fakes.fake_llm import FakeLLM, FakeLLMThread, offers_tools, split_text, streamed
from tests.fakes.redis_server import RedisServer, redis_server, redis_url  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


class City(pydantic.BaseModel):
    name: str
    population: int


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM("primary") as server:
        yield server


@pytest_asyncio.fixture
async def client(fake: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.v1_url, api_key="sk-test", max_retries=0, timeout=5) as c:
        yield c


def agent_for(client: openai.AsyncOpenAI, output_type: Any = str) -> Agent[None, Any]:
    model = OpenAIChatModel("m1", provider=OpenAIProvider(openai_client=client))
    return Agent(model, output_type=output_type)


async def complete(client: openai.AsyncOpenAI, model: str = "m1") -> str | None:
    response = await client.chat.completions.create(model=model, messages=MESSAGES)
    return response.choices[0].message.content


async def stream_text(client: openai.AsyncOpenAI, parts: list[str] | None = None) -> str:
    """Stream a completion; received content pieces also land in ``parts``."""
    parts = parts if parts is not None else []
    stream = await client.chat.completions.create(model="m1", messages=MESSAGES, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


# ---------------------------------------------------------------------- openai SDK


@pytest.mark.asyncio
async def test_ok_non_stream(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    response = await client.chat.completions.create(model="m1", messages=MESSAGES)
    assert response.choices[0].message.content == "answer from primary"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None and response.usage.total_tokens > 0
    assert fake.count() == 1 and fake.requests[0]["messages"] == MESSAGES


@pytest.mark.asyncio
async def test_ok_stream_with_usage(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m1", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == "answer from primary" and len(content) >= 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("mode", "error", "status"),
    [
        ("http500", openai.InternalServerError, 500),
        ("http429", openai.RateLimitError, 429),
        ("http401", openai.AuthenticationError, 401),
        ("http403", openai.PermissionDeniedError, 403),
        ("http404", openai.NotFoundError, 404),
        ("http400", openai.BadRequestError, 400),
        ("content_filter", openai.BadRequestError, 400),
        ("http408", openai.APIStatusError, 408),
        ("http409", openai.ConflictError, 409),
        ("http503", openai.InternalServerError, 503),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_http_error_modes(
    fake: FakeLLM, client: openai.AsyncOpenAI, mode: str, error: type[openai.APIStatusError], status: int, stream: bool
) -> None:
    fake.set_mode(mode, retry_after=3)
    with pytest.raises(error) as info:
        await (stream_text(client) if stream else complete(client))
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and info.value.body["message"]
    assert info.value.response.headers.get("retry-after") == ("3" if mode == "http429" else None)
    assert fake.count() == 1


OVERFLOW_WORDING = {
    "openai": "maximum context length is 20 tokens. However, your messages resulted in",
    "vllm": "maximum context length is 20 tokens. However, your request has",
    "llamacpp": "exceeds the available context size (20 tokens)",
    "lmstudio": "greater than the context length (n_keep: ",
}


@pytest.mark.asyncio
@pytest.mark.parametrize("style", sorted(OVERFLOW_WORDING))
@pytest.mark.parametrize("stream", [False, True])
async def test_a_prompt_beyond_the_context_window_gets_that_servers_400(
    fake: FakeLLM, client: openai.AsyncOpenAI, style: str, stream: bool
) -> None:
    fake.set_mode("ok", context_window=20, overflow=style)
    assert await complete(client) == "answer from primary", "a prompt within the window is answered"
    long = [{"role": "user", "content": "hello there " * 20}]
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="m1", messages=long, stream=stream)  # type: ignore[arg-type]
    assert OVERFLOW_WORDING[style] in f"{info.value.message} {info.value.body}"
    assert (info.value.code == "context_length_exceeded") is (style == "openai")
    assert fake.truncated == 0


@pytest.mark.asyncio
async def test_ollama_like_truncation_cuts_the_front_silently(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.set_mode("ok", context_window=30, overflow="truncate")
    messages = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "a" * 200},
                {"role": "assistant", "content": "arr"}, {"role": "user", "content": "the newest " + "b" * 60}]
    response = await client.chat.completions.create(model="m1", messages=messages)  # type: ignore[arg-type]
    assert response.choices[0].message.content == "answer from primary", "no error: the cut is silent"
    seen = fake.requests[0]["messages"]
    assert fake.truncated == 1 and fake.requests[0]["_truncated_tokens"] > 0
    assert seen[0]["role"] != "system", "the system prompt went first"
    assert seen[-1]["content"].endswith("b" * 40) and len(json.dumps(seen)) // 4 <= 30


@pytest.mark.asyncio
async def test_unknown_model_is_404(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.models = ["m1"]
    assert await complete(client, "m1") == "answer from primary"
    with pytest.raises(openai.NotFoundError) as info:
        await complete(client, "nope")
    assert info.value.code == "model_not_found" and "`nope`" in info.value.message


@pytest.mark.asyncio
async def test_stopped_server_refuses_then_recovers(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    await fake.stop()
    with pytest.raises(openai.APIConnectionError):
        await complete(client)
    await fake.start(fake.port)
    assert await complete(client) == "answer from primary"


@pytest.mark.asyncio
async def test_hang_times_out_and_stop_is_quick(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.mode = "hang"
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.5).chat.completions.create(model="m1", messages=MESSAGES)
    task = asyncio.ensure_future(complete(client))
    while fake.count() < 2:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await fake.stop()
    assert time.monotonic() - started < 1.0
    with pytest.raises(openai.APIConnectionError):
        await task


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_garbage_is_an_error(fake: FakeLLM, client: openai.AsyncOpenAI, stream: bool) -> None:
    fake.mode = "garbage"
    with pytest.raises((openai.APIError, ValueError)):  # the SDK lets json.JSONDecodeError through
        await (stream_text(client) if stream else complete(client))


@pytest.mark.asyncio
async def test_cut_stream_after_first_chunk(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.mode = "cut_stream"
    parts: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        await stream_text(client, parts)
    assert parts == [split_text(fake.reply)[0]]  # only the first content piece arrived
    with pytest.raises(openai.APIConnectionError):
        await complete(client)


@pytest.mark.asyncio
async def test_a_stream_that_stalls_half_way_then_carries_on(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.set_mode("stall_stream", first_token_delay=0.3)
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    stream = await client.chat.completions.create(model="m1", messages=MESSAGES, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.monotonic() - started, chunk.choices[0].delta.content))
    assert "".join(text for _, text in arrivals) == fake.reply  # nothing lost: it only paused
    assert arrivals[0][0] < 0.3 <= arrivals[1][0], arrivals  # the pause came after the first piece
    assert await complete(client) == fake.reply  # a short call does not stall


@pytest.mark.asyncio
async def test_a_malformed_chunk_mid_stream(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.mode = "malformed_chunk"
    parts: list[str] = []
    with pytest.raises((openai.APIError, ValueError)):  # the SDK lets json.JSONDecodeError through
        await stream_text(client, parts)
    assert parts == [split_text(fake.reply)[0]]  # the first piece arrived, then the broken event
    assert await complete(client) == fake.reply


@pytest.mark.asyncio
async def test_a_mode_can_affect_only_streams_or_only_requests_with_tools(
        fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.mode, fake.affects = "http500", streamed
    assert await complete(client) == fake.reply
    with pytest.raises(openai.InternalServerError):
        await stream_text(client)
    fake.mode, fake.affects = "http400", offers_tools
    assert await complete(client) == fake.reply
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="m1", messages=MESSAGES, tools=[tool])


@pytest.mark.asyncio
async def test_empty_reply_is_a_well_formed_completion_without_content(
        fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.mode = "empty"
    response = await client.chat.completions.create(model="m1", messages=MESSAGES)
    choice = response.choices[0]
    assert choice.message.content == "" and not choice.message.tool_calls and choice.finish_reason == "stop"
    stream = await client.chat.completions.create(model="m1", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]  # ends with [DONE]: no error
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""


@pytest.mark.asyncio
async def test_truncated_stream_ends_cleanly_without_finish_reason(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.mode = "truncated_stream"
    stream = await client.chat.completions.create(model="m1", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]  # no exception: the connection closed cleanly
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == fake.reply
    assert all(c.choices[0].finish_reason is None for c in chunks)
    async with aiohttp.ClientSession() as session:  # raw: a complete HTTP response, no [DONE]
        async with session.post(fake.v1_url + "/chat/completions",
                                json={"model": "m1", "messages": MESSAGES, "stream": True}) as response:
            raw = await response.text()
    assert response.status == 200 and raw.startswith("data: ") and "[DONE]" not in raw
    async with aiohttp.ClientSession() as session:  # non-streamed: the body stops half-way, cleanly
        async with session.post(fake.v1_url + "/chat/completions", json={"model": "m1", "messages": MESSAGES}) as r:
            body = await r.read()
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises((openai.APIError, ValueError)):
        await complete(client)


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_slow_first_token_then_normal(fake: FakeLLM, client: openai.AsyncOpenAI, stream: bool) -> None:
    fake.set_mode("slow", first_token_delay=0.3)
    started = time.monotonic()
    assert await (stream_text(client) if stream else complete(client)) == "answer from primary"
    assert time.monotonic() - started >= 0.3
    async with openai.AsyncOpenAI(base_url=fake.v1_url, api_key="sk-test", max_retries=0, timeout=0.1) as hasty:
        with pytest.raises(openai.APITimeoutError):
            await (stream_text(hasty) if stream else complete(hasty))


@pytest.mark.asyncio
async def test_in_flight_high_water_mark(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.latency = 0.1
    await asyncio.gather(*(complete(client) for _ in range(3)))
    assert fake.max_in_flight == 3 and fake.in_flight == 0
    fake.reset_counts()
    await complete(client)
    assert fake.max_in_flight == 1 and fake.state()["max_in_flight"] == 1


@pytest.mark.asyncio
async def test_latency(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.latency = 0.2
    started = time.monotonic()
    await complete(client)
    assert time.monotonic() - started >= 0.2


@pytest.mark.asyncio
async def test_health_endpoints_obey_modes(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.models = ["m1", "m2"]
    assert [m.id for m in (await client.models.list()).data] == ["m1", "m2"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.url}/api/tags") as response:
            assert await response.json() == {"models": [{"name": "m1", "model": "m1"}, {"name": "m2", "model": "m2"}]}
        fake.mode = "http500"
        async with session.get(f"{fake.url}/api/tags") as response:
            assert response.status == 500
    with pytest.raises(openai.InternalServerError):
        await client.models.list()
    assert fake.count() == 0  # health checks are not chat requests


# ---------------------------------------------------------------------- pydantic-ai


@pytest.mark.asyncio
async def test_pydantic_ai_text(client: openai.AsyncOpenAI) -> None:
    result = await agent_for(client).run("hi")
    assert result.output == "answer from primary"


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_pydantic_ai_structured_output(fake: FakeLLM, client: openai.AsyncOpenAI, stream: bool) -> None:
    fake.reply = json.dumps({"name": "Oslo", "population": 700000})
    agent = agent_for(client, City)
    if stream:
        async with agent.run_stream("hi") as run:
            output = await run.get_output()
    else:
        output = (await agent.run("hi")).output
    assert output == City(name="Oslo", population=700000)
    assert fake.requests[-1]["tools"][0]["function"]["name"].startswith("final_result")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("http500", pai_exc.ModelServerError),
        ("http429", pai_exc.ModelRateLimitError),
        ("http401", pai_exc.ModelAuthenticationError),
        ("http404", pai_exc.ModelNotFoundError),
        ("http400", pai_exc.ModelRequestRejectedError),
        ("content_filter", pai_exc.ModelRequestRejectedError),
        ("garbage", pai_exc.ModelAPIError),
        ("cut_stream", pai_exc.ModelConnectionError),
    ],
)
async def test_pydantic_ai_error_mapping(
    fake: FakeLLM, client: openai.AsyncOpenAI, mode: str, error: type[Exception]
) -> None:
    """Documents how OpenAIChatModel maps the fake's failures (see the report to the lead)."""
    fake.set_mode(mode, retry_after=7)
    with pytest.raises(error) as info:
        await agent_for(client).run("hi")
    if mode == "http429":
        assert isinstance(info.value, pai_exc.ModelHTTPError) and info.value.retry_after == 7.0


@pytest.mark.asyncio
async def test_pydantic_ai_refused_and_timeout(fake: FakeLLM, client: openai.AsyncOpenAI) -> None:
    fake.mode = "hang"
    with pytest.raises(pai_exc.ModelRequestTimeout):
        await agent_for(client).run("hi", model_settings={"request_timeout": 0.3})
    await fake.stop()
    with pytest.raises(pai_exc.ModelConnectionError) as info:
        await agent_for(client).run("hi")
    assert info.value.phase == "connect"


# ---------------------------------------------------------------------- thread runner, control, CLI


def _control(url: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(f"{url}/__control", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        result: dict[str, Any] = json.load(response)
        return result


def test_thread_runner_and_control_endpoint() -> None:
    with FakeLLMThread(FakeLLM("threaded")) as handle, openai.OpenAI(
        base_url=handle.v1_url, api_key="sk-test", max_retries=0
    ) as sync_client:
        create = sync_client.chat.completions.create
        assert create(model="m1", messages=MESSAGES).choices[0].message.content == "answer from threaded"
        handle.mode = "http500"
        with pytest.raises(openai.InternalServerError):
            create(model="m1", messages=MESSAGES)
        assert _control(handle.url, {"mode": "ok", "reply": "steered"})["mode"] == "ok"
        assert create(model="m1", messages=MESSAGES).choices[0].message.content == "steered"
        state = _control(handle.url)
        assert state["count"] == handle.count() == 3 and state["requests"][0]["model"] == "m1"
        handle.refuse()
        with pytest.raises(openai.APIConnectionError):
            create(model="m1", messages=MESSAGES)
        handle.recover()
        assert _control(handle.url, {"reset": True})["count"] == 0


def test_cli_serves_until_terminated() -> None:
    command = [sys.executable, "-m", "tests.fakes.fake_llm", "--name", "cli", "--mode", "http429", "--retry-after", "2"]
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            ready = process.stdout.readline().split()
            assert ready[0] == "FAKE_LLM_READY"
            state = _control(ready[1])
            assert (state["name"], state["mode"], state["retry_after"]) == ("cli", "http429", 2.0)
        finally:
            process.terminate()
        assert process.wait(timeout=5) == 0


# ---------------------------------------------------------------------- redis


@pytest.mark.asyncio
async def test_redis_url_is_live_and_empty(redis_url: str) -> None:
    async with aioredis.from_url(redis_url) as r:
        assert await r.ping() is True
        assert await r.dbsize() == 0
        await r.set("leftover", "1")  # the next test's FLUSHALL must remove it


@pytest.mark.asyncio
async def test_redis_kill_and_restart(redis_server: RedisServer, redis_url: str) -> None:
    async with aioredis.from_url(redis_url, socket_timeout=0.5) as r:
        assert await r.dbsize() == 0
        redis_server.kill()
        with pytest.raises(redis.ConnectionError):
            await r.ping()
        redis_server.restart()
        assert await r.ping() is True
        redis_server.pause()
        try:
            with pytest.raises(redis.TimeoutError):
                await r.ping()
        finally:
            redis_server.resume()
    redis_server.kill()  # the redis_url fixture must heal this for later tests


def test_redis_url_heals_killed_server(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_server.running and redis_server.ping()

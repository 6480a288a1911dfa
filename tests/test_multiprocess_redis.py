"""Two bot processes, one Redis: what one process learns or sets, the other obeys.

Each engine runs in its own OS process (multiprocessing, spawn), built as the bot builds it
(`RedisWithLocalFallback(RedisStateStore)`, real HTTP clients), and answers commands over a pipe. The
LLM providers are two `FakeLLM` servers on 127.0.0.1 served from this (the test) process; the
store is a real `redis-server`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.fake_llm import FakeLLM, FakeLLMThread
from tests.fakes.redis_server import RedisServer, redis_server, redis_server_available, redis_url  # noqa: F401

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not redis_server_available(), reason="redis-server is not installed"),
]

COOLDOWN = 300.0
"""Long: the cooldown must still be running when the other process looks."""


# --- the engine process ------------------------------------------------------------------------------


def _serve(conn: Any) -> None:
    """Child process: run the parent's commands until "stop" ("configure" builds a new engine)."""
    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(_serve_async(conn))


async def _serve_async(conn: Any) -> None:
    from pydantic import SecretStr
    from pydantic_ai import ModelRequest
    from pydantic_ai.direct import model_request

    from plugins.llm_fallback import LLMFallbackModel, RedisWithLocalFallback, LLMProviderFallback, ProviderSpec, RedisStateStore

    engine: LLMProviderFallback | None = None
    model: LLMFallbackModel | None = None

    async def configure(cfg: dict[str, Any]) -> int:
        """A fresh engine, built as the bot builds it, on the given Redis and providers."""
        nonlocal engine, model
        if engine is not None:
            await engine.aclose()
        store = RedisWithLocalFallback(RedisStateStore.from_url(cfg["redis_url"], prefix=cfg["prefix"]), retry_interval=1.0)
        engine = LLMProviderFallback(
            [
                ProviderSpec("ollama", "ollama", cfg["primary_url"], ("m1",), timeout=5.0, connect_timeout=1.0),
                ProviderSpec("openai", "openai", cfg["fallback_url"], ("g1",),
                             api_key=SecretStr("sk-test-mp-123456"), timeout=5.0, connect_timeout=1.0),
            ],
            store,
            failure_cooldown=COOLDOWN,
            preferred_ttl=1800,
        )
        model = LLMFallbackModel(engine)
        return os.getpid()

    async def ask() -> str:
        assert model is not None
        response = await model_request(model, [ModelRequest.user_text_prompt("hi")])
        return "".join(getattr(part, "content", "") or "" for part in response.parts)

    def on_engine(name: str) -> Any:
        async def run(*args: Any) -> Any:
            assert engine is not None, "configure first"
            return await getattr(engine, name)(*args)
        return run

    async def ask_many(count: int, interval: float) -> list[str]:
        """`count` requests, one every `interval` seconds (the parent kills Redis meanwhile)."""
        answers = []
        for _ in range(count):
            answers.append(await ask())
            await asyncio.sleep(interval)
        return answers

    async def store_kind() -> str:
        assert engine is not None
        return engine.store.kind

    commands = {
        "configure": configure,
        "ask": ask,
        "ask_many": ask_many,
        "stats": on_engine("get_provider_stats"),
        "force": on_engine("force_provider"),
        "clear": on_engine("clear_cache"),
        "store_kind": store_kind,
    }
    conn.send(("ready", os.getpid()))
    try:
        while True:
            command, args = await asyncio.to_thread(conn.recv)
            if command == "stop":
                conn.send((True, None))
                return
            try:
                conn.send((True, await commands[command](*args)))
            except Exception as error:  # noqa: BLE001 - reported to the test
                conn.send((False, f"{type(error).__name__}: {error}"))
    finally:
        if engine is not None:
            await engine.aclose()


class EngineProcess:
    """The parent's handle on one engine process."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def wait_ready(self, timeout: float = 120.0) -> int:  # imports are slow on a loaded 2-core machine
        assert self.conn.poll(timeout), "engine process did not start"
        status, pid = self.conn.recv()
        assert status == "ready"
        return pid

    def call(self, command: str, *args: Any, timeout: float = 15.0) -> Any:
        self.send(command, *args)
        return self.result(command, timeout)

    def send(self, command: str, *args: Any) -> None:
        self.conn.send((command, args))

    def result(self, command: str, timeout: float = 15.0) -> Any:
        assert self.conn.poll(timeout), f"{command}: no answer within {timeout}s"
        ok, value = self.conn.recv()
        assert ok, f"{command} failed in the engine process: {value}"
        return value

    def ask(self) -> str:
        return self.call("ask")

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.call("stop", timeout=5)
            except (AssertionError, OSError):
                pass
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processes() -> Iterator[tuple[EngineProcess, EngineProcess]]:
    """Two engine processes for the module (spawned together: their imports overlap)."""
    a, b = EngineProcess(), EngineProcess()
    try:
        pids = {a.wait_ready(), b.wait_ready()}
        assert len(pids) == 2 and os.getpid() not in pids
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def providers() -> Iterator[tuple[FakeLLMThread, FakeLLMThread]]:
    primary = FakeLLM("primary").run_in_thread()
    fallback = FakeLLM("fallback").run_in_thread()
    try:
        yield primary, fallback
    finally:
        primary.stop()
        fallback.stop()


def configure(processes: tuple[EngineProcess, EngineProcess], url: str,
              providers: tuple[FakeLLMThread, FakeLLMThread]) -> tuple[EngineProcess, EngineProcess]:
    """Give both processes a fresh engine on Redis `url` (a fresh key prefix) and these providers."""
    primary, fallback = providers
    cfg = {"redis_url": url, "prefix": f"mp-{uuid.uuid4().hex[:8]}:", "primary_url": primary.v1_url,
           "fallback_url": fallback.v1_url}
    for process in processes:
        process.call("configure", cfg)
    return processes


PRIMARY = "answer from primary"
FALLBACK = "answer from fallback"


# --- tests ---------------------------------------------------------------------------------------------


def test_failure_force_and_clear_are_shared_between_processes(
    processes: tuple[EngineProcess, EngineProcess],
    redis_url: str,  # noqa: F811 - the fixture
    providers: tuple[FakeLLMThread, FakeLLMThread],
) -> None:
    primary, fallback = providers
    a, b = configure(processes, redis_url, providers)
    assert a.ask() == PRIMARY and b.ask() == PRIMARY
    primary.reset_counts()

    # A meets the broken primary once and is answered by the fallback.
    primary.mode = "http500"
    assert a.ask() == FALLBACK
    assert primary.count() == 1

    # B never touches the primary: the cooldown A recorded is in Redis.
    for _ in range(5):
        assert b.ask() == FALLBACK
    assert primary.count() == 1
    health = b.call("stats")["provider_health"]["ollama"]
    assert health["state"] == "cooling"
    assert health["available"] is False
    assert 0 < health["cooldown_seconds_left"] <= COOLDOWN
    assert health["last_error_kind"] == "server_error"
    assert b.call("stats")["store"] == "redis"

    # clear_cache() in B: A sees no cooldown and goes back to the (repaired) primary.
    primary.mode = "ok"
    cleared = b.call("clear")
    assert "ollama" in cleared["cooldowns"]
    stats_a = a.call("stats")
    assert stats_a["provider_health"]["ollama"]["state"] == "unknown"  # the cooldown is gone, and so is its history
    assert stats_a["provider_health"]["ollama"]["cooldown_seconds_left"] == 0
    assert a.ask() == PRIMARY
    assert primary.count() == 2

    # force_provider() in A: B puts the forced provider first although the primary is healthy.
    a.call("force", "openai", 600)
    stats_b = b.call("stats")
    assert stats_b["forced_provider"] == "openai"
    assert 590 <= stats_b["forced_seconds_left"] <= 600
    fallback_before = fallback.count()
    for _ in range(3):
        assert b.ask() == FALLBACK
    assert primary.count() == 2
    assert fallback.count() == fallback_before + 3

    # ... and clear_cache() in B lifts A's force for A too.
    assert b.call("clear")["forced"] == "openai"
    assert a.call("stats")["forced_provider"] is None
    assert a.ask() == PRIMARY


def test_both_processes_keep_answering_when_redis_dies(
    processes: tuple[EngineProcess, EngineProcess], providers: tuple[FakeLLMThread, FakeLLMThread]
) -> None:
    primary, _ = providers
    redis = RedisServer().start()  # our own: this test kills it
    try:
        a, b = configure(processes, redis.url, providers)
        assert a.ask() == PRIMARY and b.ask() == PRIMARY
        assert a.call("store_kind") == "redis"

        # Kill Redis while both processes are sending requests.
        for process in (a, b):
            process.send("ask_many", 12, 0.05)
        time.sleep(0.25)
        redis.kill()
        for process in (a, b):
            assert process.result("ask_many") == [PRIMARY] * 12
            assert process.call("store_kind") == "degraded"
            assert process.call("stats")["store"] == "degraded"

        # Fallback still works on process-local state while Redis is gone.
        primary.mode = "http500"
        primary.reset_counts()
        for process in (a, b):
            assert process.ask() == FALLBACK
            assert process.ask() == FALLBACK
        # Each process pays the broken primary once (no shared state now), then skips it locally.
        assert primary.count() == 2
    finally:
        redis.stop()

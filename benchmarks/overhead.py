#!/usr/bin/env python
"""Healthy-path cost of the fallback model, and of the aiogram middleware.

Model: one fake OpenAI-compatible provider (its own process, 127.0.0.1) answers every call.
Three arms are called side by side, interleaved call by call in rotating order so drift
(CPU frequency, noisy neighbours, GC) hits them alike:

- ``direct``: the engine's own ``OpenAIChatModel`` for the primary (``engine.models["ollama"]["m1"]``),
- ``memory``: ``LLMFallbackModel`` over an engine with ``MemoryStateStore``,
- ``redis``:  ``LLMFallbackModel`` over an engine with ``RedisWithLocalFallback(RedisStateStore)`` on a local
  ``redis-server`` (the engine is given the very same model objects, so all three arms share one
  HTTP client and connection pool: only the fallback layer differs).

Calls go through ``pydantic_ai.direct.model_request`` (no agent loop), each arm's calls timed one
by one. Runs (defaults):

- 0 ms fake latency: one client process, one caller (pure CPU + loopback cost per call);
- 20 ms: ``--processes`` client processes (default 4), one sequential caller each, so 2000 calls
  per arm fit the time budget without callers queueing behind each other in one event loop;
- 20 ms "loaded loop": ``--loaded-concurrency`` callers (default 4) sharing ONE event loop, as a
  busy bot does: every extra await that yields to the loop (the Redis read) then also waits
  for the other callers' CPU work.

Middleware: ``Dispatcher.feed_update`` of a private text message to a do-nothing handler, with
and without ``setup_llm_fallback(dp, engine)`` (middleware + admin router in front of the
handler, as the bot wires it). The bot's session refuses any API call (none is made).

    python benchmarks/overhead.py [--calls 2000] [--latency 0 20] [--updates 5000] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FakeLLMProcess, RedisProcess, exit_on_sigterm, fmt, percentile, rnd
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.base import BaseSession
from aiogram.types import Message, Update
from pydantic import SecretStr
from pydantic_ai import ModelRequest
from pydantic_ai.direct import model_request

from plugins.llm_fallback import (
    RedisWithLocalFallback,
    LLMFallbackModel,
    LLMProviderFallback,
    MemoryStateStore,
    ProviderSpec,
    RedisStateStore,
    setup_llm_fallback,
)

ARMS = ("direct", "memory", "redis")


# --- the model arms ------------------------------------------------------------------------------


def specs(primary_url: str, fallback_url: str) -> list[ProviderSpec]:
    return [
        ProviderSpec("ollama", "ollama", primary_url, ("m1",), timeout=10.0, connect_timeout=1.0),
        ProviderSpec("openai", "openai", fallback_url, ("g1",), api_key=SecretStr("sk-bench"), timeout=10.0,
                     connect_timeout=1.0),
    ]


def model_worker(primary_url: str, fallback_url: str, redis_url: str, prefix: str, calls: int, concurrency: int,
                 warmup: int, worker_id: int, barrier: Any, results: Any) -> None:
    """One client process: warm up, wait for the others, then call the three arms interleaved."""
    logging.basicConfig(level=logging.ERROR)
    try:
        results.put((worker_id, asyncio.run(_model_worker(primary_url, fallback_url, redis_url, prefix, calls,
                                                          concurrency, warmup, worker_id, barrier))))
    except BaseException as error:  # noqa: BLE001 - reported by the parent
        barrier.abort()
        import traceback

        results.put((worker_id, {"error": "".join(traceback.format_exception(error))[-2000:]}))


async def _model_worker(primary_url: str, fallback_url: str, redis_url: str, prefix: str, calls: int,
                        concurrency: int, warmup: int, worker_id: int, barrier: Any) -> dict[str, Any]:
    memory_engine = LLMProviderFallback(specs(primary_url, fallback_url), MemoryStateStore(),
                                        failure_cooldown=30, preferred_ttl=1800)
    redis_store = RedisWithLocalFallback(RedisStateStore.from_url(redis_url, prefix=prefix))
    # Same model objects (so the same HTTP client and pool) for all three arms.
    redis_engine = LLMProviderFallback(specs(primary_url, fallback_url), redis_store,
                                       failure_cooldown=30, preferred_ttl=1800, models=memory_engine.models)
    models = {
        "direct": memory_engine.models["ollama"]["m1"],
        "memory": LLMFallbackModel(memory_engine),
        "redis": LLMFallbackModel(redis_engine),
    }
    messages = [ModelRequest.user_text_prompt("hi")]
    samples: dict[str, list[float]] = {arm: [] for arm in ARMS}

    async def call(arm: str) -> float:
        start = time.perf_counter()
        response = await model_request(models[arm], messages)
        elapsed = time.perf_counter() - start
        text = "".join(getattr(part, "content", "") for part in response.parts)
        if "answer from primary" not in text:
            raise RuntimeError(f"{arm}: unexpected answer {text!r}")
        return elapsed

    for _ in range(warmup):
        for arm in ARMS:
            await call(arm)
    gc.collect()
    gc.freeze()  # the imported libraries out of the collector's way (same for every arm)
    await asyncio.to_thread(barrier.wait, 60)

    rounds = calls // concurrency

    async def worker(task_id: int) -> None:
        for round_no in range(rounds):
            for step in range(len(ARMS)):  # rotate the order every round, offset per task
                arm = ARMS[(round_no + step + task_id + worker_id) % len(ARMS)]
                samples[arm].append(await call(arm))

    await asyncio.gather(*(worker(t) for t in range(concurrency)))

    # Context: the Redis round trip the redis arm pays (one MGET of the state keys per request).
    mget = []
    for _ in range(200):
        t0 = time.perf_counter()
        await redis_engine.health.read()
        mget.append(time.perf_counter() - t0)
    store_kind = redis_store.kind
    await memory_engine.aclose()
    await redis_store.close()
    if store_kind != "redis":
        raise RuntimeError(f"the Redis store degraded during the run ({store_kind})")
    return {"samples": samples, "mget": mget}


def measure_models(primary: FakeLLMProcess, fallback: FakeLLMProcess, redis_url: str, *, calls: int,
                   latency_ms: float, processes: int, concurrency: int, warmup: int) -> dict[str, Any]:
    """`processes` client processes, each running `concurrency` callers; `calls` per arm in total."""
    primary.control(latency=latency_ms / 1000.0, mode="ok", reset=True)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    per_process = max(concurrency, calls // processes)
    workers = [
        ctx.Process(target=model_worker, args=(primary.v1_url, fallback.v1_url, redis_url,
                                               f"bench-overhead-{latency_ms:g}-{processes}-{concurrency}-{w}:",
                                               per_process, concurrency, warmup, w, barrier, results))
        for w in range(processes)
    ]
    started = time.perf_counter()
    for process in workers:
        process.start()
    outputs = [results.get(timeout=600) for _ in workers]
    wall = time.perf_counter() - started
    for process in workers:
        process.join(timeout=10)
    errors = [out["error"] for _, out in outputs if "error" in out]
    if errors:
        raise RuntimeError("; ".join(errors))
    samples: dict[str, list[float]] = {arm: [] for arm in ARMS}
    mget: list[float] = []
    for _, out in sorted(outputs, key=lambda item: item[0]):
        for arm in ARMS:
            samples[arm].extend(out["samples"][arm])
        mget.extend(out["mget"])

    direct_median = statistics.median(samples["direct"])
    result: dict[str, Any] = {
        "latency_ms": latency_ms, "processes": processes, "concurrency": concurrency,
        "calls_per_arm": len(samples["direct"]), "wall_s": rnd(wall, 2),
        "redis_mget_median_ms": rnd(statistics.median(mget) * 1000, 4),
    }
    for arm in ARMS:
        median = statistics.median(samples[arm])
        entry = {"median_ms": rnd(median * 1000, 4), "p99_ms": rnd(percentile(samples[arm], 99) * 1000, 4)}
        if arm != "direct":
            entry["overhead_ms"] = rnd((median - direct_median) * 1000, 4)
            entry["ratio"] = rnd(median / direct_median, 4)
        result[arm] = entry
    return result


# --- the middleware --------------------------------------------------------------------------------


class NoNetworkSession(BaseSession):
    """A Bot API session that refuses every call: the benchmark must not make any."""

    calls = 0

    async def close(self) -> None:
        return None

    async def make_request(self, bot: Bot, method: Any, timeout: int | None = None) -> Any:
        NoNetworkSession.calls += 1
        raise RuntimeError(f"unexpected Bot API call: {type(method).__name__}")

    async def stream_content(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never used
        raise RuntimeError("unexpected download")


def build_dispatcher(engine: LLMProviderFallback | None) -> tuple[Dispatcher, list[int]]:
    handled: list[int] = []
    router = Router(name="bench")

    @router.message()
    async def on_message(message: Message) -> None:
        handled.append(message.message_id)

    dp = Dispatcher()
    if engine is not None:  # as luka_bot/core/loader.py does: the plugin first, then the bot's routers
        setup_llm_fallback(dp, engine, admin_ids=(1,))
    dp.include_router(router)
    return dp, handled


def make_update(update_id: int) -> Update:
    return Update.model_validate({
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": 42, "type": "private", "first_name": "Bench"},
            "from": {"id": 42, "is_bot": False, "first_name": "Bench"},
            "text": "hello there",
        },
    })


async def measure_middleware(updates: int, warmup: int = 200) -> dict[str, Any]:
    engine = LLMProviderFallback(specs("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"), MemoryStateStore())
    bot = Bot("123456:" + "A" * 35, session=NoNetworkSession())
    arms = {"without": build_dispatcher(None), "with": build_dispatcher(engine)}
    samples: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for i in range(warmup):
        for name in names:
            await arms[name][0].feed_update(bot, make_update(i))
    prepared = [make_update(1000 + i) for i in range(updates * len(names))]
    for i in range(updates):
        for step in range(len(names)):
            name = names[(i + step) % len(names)]
            update = prepared[i * len(names) + step]
            t0 = time.perf_counter()
            await arms[name][0].feed_update(bot, update)
            samples[name].append(time.perf_counter() - t0)
    handled = {name: len(arm[1]) for name, arm in arms.items()}
    await engine.aclose()
    if NoNetworkSession.calls:
        raise RuntimeError(f"{NoNetworkSession.calls} Bot API calls were attempted")
    if any(count != warmup + updates for count in handled.values()):
        raise RuntimeError(f"handler did not see every update: {handled}")
    base = statistics.median(samples["without"])
    result: dict[str, Any] = {"updates_per_arm": updates, "bot_api_calls": NoNetworkSession.calls}
    for name in names:
        median = statistics.median(samples[name])
        result[name] = {"median_us": rnd(median * 1e6, 2), "p99_us": rnd(percentile(samples[name], 99) * 1e6, 2)}
    result["overhead_us"] = rnd((statistics.median(samples["with"]) - base) * 1e6, 2)
    result["ratio"] = rnd(statistics.median(samples["with"]) / base, 4)
    return result


# --- report ------------------------------------------------------------------------------------------


def print_tables(model_runs: list[dict[str, Any]], middleware: dict[str, Any]) -> None:
    print("\n### LLMFallbackModel vs the same OpenAIChatModel called directly (healthy primary)\n")
    print("| fake latency | client processes × callers each | calls/arm | direct median / p99 ms "
          "| memory median / p99 ms | redis median / p99 ms | overhead memory: ms (ratio) "
          "| overhead redis: ms (ratio) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in model_runs:
        d, m, r = run["direct"], run["memory"], run["redis"]
        print(f"| {run['latency_ms']:g} ms | {run['processes']} × {run['concurrency']} | {run['calls_per_arm']} "
              f"| {fmt(d['median_ms'])} / {fmt(d['p99_ms'])} | {fmt(m['median_ms'])} / {fmt(m['p99_ms'])} "
              f"| {fmt(r['median_ms'])} / {fmt(r['p99_ms'])} "
              f"| {m['overhead_ms']:+.3f} ({m['ratio']:.3f}) | {r['overhead_ms']:+.3f} ({r['ratio']:.3f}) |")
    print()
    for run in model_runs:
        print(f"- {run['latency_ms']:g} ms, {run['processes']} × {run['concurrency']}: wall {run['wall_s']} s; "
              f"one Redis MGET of the state keys alone: median {run['redis_mget_median_ms']:.3f} ms")
    print("\n### aiogram middleware: Dispatcher.feed_update of one text message\n")
    print("| dispatcher | median µs | p99 µs |")
    print("|---|---:|---:|")
    w, wo = middleware["with"], middleware["without"]
    print(f"| without the plugin | {fmt(wo['median_us'], 1)} | {fmt(wo['p99_us'], 1)} |")
    print(f"| with setup_llm_fallback | {fmt(w['median_us'], 1)} | {fmt(w['p99_us'], 1)} |")
    print(f"\noverhead per update: {middleware['overhead_us']:+.1f} µs (ratio {middleware['ratio']:.3f}), "
          f"{middleware['updates_per_arm']} updates per arm, Bot API calls: {middleware['bot_api_calls']}")


def planned_runs(args: argparse.Namespace) -> list[tuple[float, int, int, int]]:
    """(latency, processes, callers per process, calls per arm) for each model run."""
    runs = []
    for latency in args.latency:
        if latency == 0:
            runs.append((latency, 1, 1, args.calls))
        else:
            runs.append((latency, args.processes, 1, args.calls))
    if args.loaded_calls and args.loaded_concurrency > 1 and args.latency:
        runs.append((max(args.latency), 1, args.loaded_concurrency, args.loaded_calls))
    return runs


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    redis = RedisProcess().start()
    primary = FakeLLMProcess("primary")
    fallback = FakeLLMProcess("fallback")
    try:
        runs = []
        for latency, processes, concurrency, calls in planned_runs(args):
            print(f"… model arms at {latency:g} ms: {processes} process(es) × {concurrency} caller(s), "
                  f"{calls} calls per arm", file=sys.stderr, flush=True)
            runs.append(measure_models(primary, fallback, redis.url, calls=calls, latency_ms=latency,
                                       processes=processes, concurrency=concurrency, warmup=args.warmup))
        if fallback.count():
            raise RuntimeError("the fallback provider was called on the healthy path")
        print(f"… middleware, {args.updates} updates per arm", file=sys.stderr, flush=True)
        middleware = await measure_middleware(args.updates)
    finally:
        primary.stop()
        fallback.stop()
        redis.stop()
    print_tables(runs, middleware)
    return {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "model": runs,
        "middleware": middleware,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per arm and latency (default 2000)")
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 20.0],
                        help="fake completion latencies in ms (default: 0 20)")
    parser.add_argument("--processes", type=int, default=4,
                        help="client processes (one sequential caller each) for latencies > 0 (default 4)")
    parser.add_argument("--loaded-concurrency", type=int, default=4,
                        help="extra run at the highest latency: this many callers in ONE event loop (default 4)")
    parser.add_argument("--loaded-calls", type=int, default=600,
                        help="calls per arm of that loaded-loop run (default 600; 0 skips it)")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up calls per arm (not measured)")
    parser.add_argument("--updates", type=int, default=5000, help="Telegram updates per middleware arm")
    parser.add_argument("--json", type=Path, help="write the figures as JSON to this path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    gc.collect()
    exit_on_sigterm()
    result = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")


if __name__ == "__main__":
    main()

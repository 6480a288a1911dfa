#!/usr/bin/env python
"""Outage drill: the same request stream against each failover strategy, through a scripted outage.

Two fake OpenAI-compatible providers on 127.0.0.1 (``tests/fakes/fake_llm.py``, served from this
parent process), a timeline ``healthy → primary outage → primary recovered``, and R requests
arriving at fixed times (evenly spaced over the timeline, at most C in flight; the same arrival
times for every strategy). Each strategy runs in fresh client process(es) (multiprocessing,
spawn) so the fakes and the load never share an event loop:

- ``direct``            the primary's ``OpenAIChatModel`` alone (``max_retries=0``);
- ``fallbackmodel``     pydantic-ai ``FallbackModel(primary, fallback)``, SDK retries off;
- ``litellm``           LiteLLM ``Router`` with ``fallbacks``, ``allowed_fails=0`` (cool down at the
                        first failure, as this project does), ``cooldown_time=--cooldown``, ``num_retries=0``;
- ``luka-memory``       this project: ``LLMFallbackModel`` over ``LLMProviderFallback`` + ``MemoryStateStore``;
- ``luka-redis-2proc``  this project with ``FailsafeStore(RedisStateStore)`` on a local redis-server,
                        the load split over 2 processes (each its own engine) sharing it.

Every strategy uses the same client timeouts: connect 1 s, read ``--timeout`` (default 2 s).

Outage kinds: ``refuse`` (the primary's port is closed: ``FakeLLM.stop()``, then ``start()`` on the
same port), ``hang`` (accepts, never answers), ``http500``, ``http429`` (``Retry-After: --cooldown``).

Attempts on the dead primary during the outage: for ``hang``/``http500``/``http429`` the requests
the primary server received inside the outage window; for ``refuse`` nothing reaches a server, so
the client counts them: every strategy's primary HTTP client records each attempt it starts
(an httpx request event hook for the pydantic-ai/openai clients, LiteLLM's ``log_pre_api_call``
callback for the Router) — one attempt = one connection attempt on a closed port. Both counts are
printed for every kind, as a cross-check.

Latency percentiles are over successful requests, from the scheduled arrival to the answer
(waiting for a free slot counts). "healthy p99" (the baseline for the outage p99) is over the
requests answered before the outage began. "Detection" is the first answer the fallback gave
during the outage (the failure was known by then). "of which after detection": primary attempts
from then until recovery — with a working cooldown, one half-open probe per cooldown window; the
others were already in flight when the failure was detected. "slow after detection": requests
that arrived after detection and still took at least the read timeout (for ``hang``: with a
working cooldown, only the probes).

Each client process runs ``gc.freeze()`` after its warm-up (for every strategy alike), so a
collector pass over the freshly imported libraries does not land in the middle of a run.

    python benchmarks/outage_drill.py --kind all --json drill.json --png docs/outage_drill.png

Figures, per strategy: success rate; p50/p95/p99 latency of the successful requests (from the
scheduled arrival: waiting for a free slot counts), overall, in the healthy phase and for
requests arriving during the outage; primary attempts during the outage; share of all requests
answered by the primary; seconds from the primary's recovery until traffic is back on it (the
end of the first request, arriving after recovery, from which on every request was answered by
the primary).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import multiprocessing as mp
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, percentile, rnd

from tests.fakes.fake_llm import FakeLLM

KINDS = ("refuse", "hang", "http500", "http429")
STRATEGIES = ("direct", "fallbackmodel", "litellm", "luka-memory", "luka-redis-2proc")
CONNECT_TIMEOUT = 1.0
API_KEY = "sk-bench-not-a-secret"


# --- the fakes (parent process) ---------------------------------------------------------------------


class TimedFakeLLM(FakeLLM):
    """A FakeLLM that also remembers when each chat completion request arrived."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stamps: list[float] = []

    async def _chat(self, request: Any) -> Any:
        self.stamps.append(time.time())
        return await super()._chat(request)


# --- one client process -------------------------------------------------------------------------------


@dataclass
class Record:
    index: int
    arrival: float
    """Scheduled arrival, seconds after t0."""
    start: float
    """Absolute time the call began (after waiting for a free slot)."""
    end: float
    ok: bool
    served: str | None
    error: str | None = None


def _served_by(text: str) -> str | None:
    if "answer from primary" in text:
        return "primary"
    if "answer from fallback" in text:
        return "fallback"
    return None


async def _build(strategy: str, cfg: dict[str, Any], attempts: list[float]) -> tuple[Any, Any]:
    """(ask coroutine function returning the answer text, closer) for one strategy."""
    primary_url, fallback_url = cfg["primary_url"], cfg["fallback_url"]
    read_timeout = cfg["timeout"]

    def on_attempt(path: str) -> None:
        if path.endswith("/chat/completions"):
            attempts.append(time.time())

    if strategy == "litellm":
        import httpx
        import litellm
        from litellm import Router
        from litellm.integrations.custom_logger import CustomLogger

        litellm.suppress_debug_info = True
        logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
        logging.getLogger("LiteLLM Router").setLevel(logging.CRITICAL)

        class AttemptCounter(CustomLogger):
            def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
                params = kwargs.get("litellm_params") or {}
                base = str(params.get("api_base") or kwargs.get("api_base") or "")
                if base.rstrip("/") == primary_url.rstrip("/"):
                    attempts.append(time.time())

        litellm.callbacks = [AttemptCounter()]
        timeout = httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT)
        router = Router(
            model_list=[
                {"model_name": "primary", "litellm_params": {"model": "openai/m1", "api_base": primary_url,
                                                             "api_key": API_KEY, "timeout": timeout,
                                                             "max_retries": 0}},
                {"model_name": "fallback", "litellm_params": {"model": "openai/g1", "api_base": fallback_url,
                                                              "api_key": API_KEY, "timeout": timeout,
                                                              "max_retries": 0}},
            ],
            fallbacks=[{"primary": ["fallback"]}],
            num_retries=0,
            allowed_fails=0,
            cooldown_time=cfg["cooldown"],
            timeout=read_timeout,
        )

        async def ask(model: str = "primary") -> str:
            response = await router.acompletion(model=model, messages=[{"role": "user", "content": "hi"}])
            return response.choices[0].message.content or ""

        async def warm() -> None:
            await ask("primary")
            await ask("fallback")

        return (ask, warm), None

    import httpx2
    from openai import AsyncOpenAI
    from pydantic_ai import ModelRequest
    from pydantic_ai.direct import model_request
    from pydantic_ai.models.fallback import FallbackModel
    from pydantic_ai.models.ollama import OllamaModel
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.ollama import OllamaProvider
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.settings import ModelSettings

    messages = [ModelRequest.user_text_prompt("hi")]

    async def hook(request: Any) -> None:
        on_attempt(request.url.path)

    def text_of(response: Any) -> str:
        return "".join(getattr(part, "content", "") or "" for part in response.parts)

    if strategy in ("direct", "fallbackmodel"):
        timeout = httpx2.Timeout(read_timeout, connect=CONNECT_TIMEOUT)
        primary_client = AsyncOpenAI(base_url=primary_url, api_key="ollama", max_retries=0, timeout=timeout)
        primary_client._client.event_hooks["request"].append(hook)
        primary = OllamaModel("m1", provider=OllamaProvider(openai_client=primary_client),
                              settings=ModelSettings(max_retries=0))
        fallback_client = AsyncOpenAI(base_url=fallback_url, api_key=API_KEY, max_retries=0, timeout=timeout)
        fallback = OpenAIChatModel("g1", provider=OpenAIProvider(openai_client=fallback_client),
                                   settings=ModelSettings(max_retries=0))
        model = primary if strategy == "direct" else FallbackModel(primary, fallback)

        async def ask() -> str:
            return text_of(await model_request(model, messages))

        async def warm() -> None:
            await model_request(primary, messages)
            await model_request(fallback, messages)

        async def close() -> None:
            await primary_client.close()
            await fallback_client.close()

        return (ask, warm), close

    # this project
    from pydantic import SecretStr

    from plugins.llm_fallback import (
        LLMFallbackModel,
        FailsafeStore,
        LLMProviderFallback,
        MemoryStateStore,
        ProviderSpec,
        RedisStateStore,
    )

    store = (MemoryStateStore() if strategy == "luka-memory"
             else FailsafeStore(RedisStateStore.from_url(cfg["redis_url"], prefix=cfg["redis_prefix"])))
    engine = LLMProviderFallback(
        [ProviderSpec("ollama", "ollama", primary_url, ("m1",), timeout=read_timeout, connect_timeout=CONNECT_TIMEOUT),
         ProviderSpec("openai", "openai", fallback_url, ("g1",), api_key=SecretStr(API_KEY), timeout=read_timeout,
                      connect_timeout=CONNECT_TIMEOUT)],
        store, failure_cooldown=cfg["cooldown"], preferred_ttl=1800,
    )
    engine.clients["ollama"].client._client.event_hooks["request"].append(hook)
    model = LLMFallbackModel(engine)

    async def ask() -> str:
        return text_of(await model_request(model, messages))

    async def warm() -> None:
        await model_request(model, messages)
        await model_request(engine.models["openai"]["g1"], messages)

    async def close() -> None:
        if store.kind == "degraded":
            logging.getLogger("drill").warning("the Redis store degraded during the run")
        await engine.aclose()

    return (ask, warm), close


async def _client_main(strategy: str, cfg: dict[str, Any], schedule: list[tuple[int, float]], concurrency: int,
                       control: Any, results: Any, worker_id: int) -> None:
    """ready (built, warmed) → "go": warm again → armed → t0: run the schedule → done."""
    attempts: list[float] = []
    try:
        (ask, warm), close = await _build(strategy, cfg, attempts)
        await warm()
    except Exception as error:  # noqa: BLE001 - reported: the strategy is skipped
        results.put(("error", worker_id, f"{type(error).__name__}: {error}"[:300]))
        return
    results.put(("ready", worker_id, None))
    await asyncio.to_thread(control.get, True, 900)  # "go": our turn (other strategies ran meanwhile)
    await warm()  # fresh keep-alive connections, as a running bot has
    gc.collect()
    gc.freeze()  # long-lived imports out of the collector's way: no 50-100 ms gen-2 pauses mid-run
    results.put(("armed", worker_id, None))
    t0 = await asyncio.to_thread(control.get, True, 60)
    attempts.clear()
    slots = asyncio.Semaphore(concurrency)
    records: list[Record] = []
    guard = cfg["timeout"] * 3 + 5

    async def one(index: int, offset: float) -> None:
        delay = t0 + offset - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        async with slots:
            start = time.time()
            try:
                async with asyncio.timeout(guard):
                    text = await ask()
                served = _served_by(text)
                records.append(Record(index, offset, start, time.time(), served is not None, served,
                                      None if served else f"unexpected answer {text[:60]!r}"))
            except Exception as error:  # noqa: BLE001 - a failed request is a figure
                records.append(Record(index, offset, start, time.time(), False, None,
                                      f"{type(error).__name__}: {str(error)[:120]}"))

    await asyncio.gather(*(one(i, off) for i, off in schedule))
    if close is not None:
        await close()
    results.put(("done", worker_id, {"records": [asdict(r) for r in records], "attempts": attempts}))


def client_process(strategy: str, cfg: dict[str, Any], schedule: list[tuple[int, float]], concurrency: int,
                   control: Any, results: Any, worker_id: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(_client_main(strategy, cfg, schedule, concurrency, control, results, worker_id))


# --- one strategy run (parent) --------------------------------------------------------------------------


async def _get(results: Any, timeout: float) -> Any:
    return await asyncio.to_thread(results.get, True, timeout)


class StrategyRun:
    """One strategy's fakes and client process(es): spawned up front, run on its turn."""

    def __init__(self, kind: str, strategy: str, args: argparse.Namespace, redis_url: str | None, run_id: int):
        self.kind, self.strategy, self.args = kind, strategy, args
        self.redis_url, self.run_id = redis_url, run_id
        self.processes = 2 if strategy == "luka-redis-2proc" else 1
        self.primary = TimedFakeLLM("primary", latency=args.latency_ms / 1000.0)
        self.fallback = TimedFakeLLM("fallback", latency=args.latency_ms / 1000.0)
        self.workers: list[Any] = []
        self.skipped: str | None = None

    @property
    def total(self) -> float:
        return self.args.healthy_s + self.args.outage_s + self.args.recovered_s

    async def spawn(self) -> None:
        args = self.args
        await self.primary.start()
        await self.fallback.start()
        if self.strategy == "luka-redis-2proc" and self.redis_url is None:
            self.skipped = "redis-server is not installed"
            return
        schedule = [(i, i * self.total / args.requests) for i in range(args.requests)]
        cfg = {"primary_url": self.primary.v1_url, "fallback_url": self.fallback.v1_url, "timeout": args.timeout,
               "cooldown": args.cooldown, "redis_url": self.redis_url, "redis_prefix": f"drill{self.run_id}:"}
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.controls = [ctx.Queue() for _ in range(self.processes)]
        self.workers = [
            ctx.Process(target=client_process, daemon=True,
                        args=(self.strategy, cfg, schedule[w::self.processes],
                              max(1, args.concurrency // self.processes), self.controls[w], self.results, w))
            for w in range(self.processes)
        ]
        for process in self.workers:
            process.start()

    async def wait_ready(self) -> None:
        for _ in self.workers:
            status, _, detail = await _get(self.results, 180)
            if status == "error":
                self.skipped = detail

    async def run(self) -> dict[str, Any]:
        """The timeline, once: healthy → outage → recovered. Returns the raw records."""
        args, primary = self.args, self.primary
        outcome: dict[str, Any] = {"strategy": self.strategy}
        if self.skipped:
            return {**outcome, "skipped": self.skipped}
        for control in self.controls:
            control.put("go")
        for _ in self.workers:
            status, _, detail = await _get(self.results, 60)
            if status != "armed":
                raise RuntimeError(f"{self.strategy}: client failed: {detail}")
        primary.stamps.clear()
        self.fallback.stamps.clear()
        t0 = time.time() + 0.2
        for control in self.controls:
            control.put(t0)
        await asyncio.sleep(max(0.0, t0 + args.healthy_s - time.time()))
        t_out = time.time()
        await start_outage(self.kind, primary, args)
        await asyncio.sleep(max(0.0, t0 + args.healthy_s + args.outage_s - time.time()))
        t_rec = time.time()
        await end_outage(self.kind, primary)
        payloads = []
        for _ in self.workers:
            status, _, detail = await _get(self.results, self.total + args.timeout * 4 + 60)
            if status != "done":
                raise RuntimeError(f"{self.strategy}: client failed: {detail}")
            payloads.append(detail)
        records = sorted((r for p in payloads for r in p["records"]), key=lambda r: r["index"])
        attempts = sorted(a for p in payloads for a in p["attempts"])
        return {**outcome, "t0": t0, "t_out": t_out, "t_rec": t_rec, "records": records,
                "client_attempts": attempts, "server_primary": list(primary.stamps),
                "server_fallback": len(self.fallback.stamps)}

    async def close(self) -> None:
        for process in self.workers:
            if process.is_alive():
                process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        if self.primary.running:
            await self.primary.stop()
        await self.fallback.stop()


async def start_outage(kind: str, primary: TimedFakeLLM, args: argparse.Namespace) -> None:
    if kind == "refuse":
        await primary.stop()
    elif kind == "http429":
        primary.set_mode("http429", retry_after=args.cooldown)
    else:
        primary.set_mode(kind)


async def end_outage(kind: str, primary: TimedFakeLLM) -> None:
    if kind == "refuse":
        await primary.start(primary.port)
    primary.set_mode("ok")


# --- figures ---------------------------------------------------------------------------------------------


def summarize(run: dict[str, Any], args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The published figures (JSON shape) plus the context figures printed in the table."""
    if "skipped" in run:
        return {"skipped": run["skipped"]}
    records, t0, t_out, t_rec = run["records"], run["t0"], run["t_out"], run["t_rec"]

    def latency(r: dict[str, Any]) -> float:
        return (r["end"] - (t0 + r["arrival"])) * 1000.0

    ok = [r for r in records if r["ok"]]
    during = [r for r in ok if t_out <= t0 + r["arrival"] < t_rec]
    healthy = [r for r in ok if r["end"] < t_out]  # baseline: answered before the outage began
    client_out = sum(1 for a in run["client_attempts"] if t_out <= a < t_rec)
    server_out = sum(1 for a in run["server_primary"] if t_out <= a < t_rec)
    primary_attempts = client_out if kind == "refuse" else server_out

    # Back on the primary: the first request arriving after recovery from which on every request
    # was answered by the primary; report when that request finished.
    after = [r for r in records if t0 + r["arrival"] >= t_rec]
    recovery = None
    for position, record in enumerate(after):
        if all(r["served"] == "primary" for r in after[position:]):
            recovery = max(0.0, record["end"] - t_rec)
            break

    # hang: who paid the timeout? Requests arriving after the first failover answer (detection)
    # that still took >= the timeout: with a working cooldown only the probes.
    first_failover = min((r["end"] for r in ok if r["served"] == "fallback" and r["end"] >= t_out), default=None)
    slow_after_detection = None
    if first_failover is not None:
        slow_after_detection = sum(1 for r in records if t0 + r["arrival"] >= first_failover
                                   and t0 + r["arrival"] < t_rec and latency(r) >= args.timeout * 1000 * 0.95)
    # Attempts on the dead primary once its failure was known (after the first failover answer):
    # with a working cooldown, one half-open probe per cooldown window.
    source = run["client_attempts"] if kind == "refuse" else run["server_primary"]
    attempts_after_detection = (None if first_failover is None
                                else sum(1 for a in source if first_failover <= a < t_rec))
    errors: dict[str, int] = {}
    for r in records:
        if not r["ok"]:
            key = (r["error"] or "?").split(":")[0]
            errors[key] = errors.get(key, 0) + 1

    lat = [latency(r) for r in ok]
    figures = {
        "success_rate": rnd(len(ok) / len(records), 4) if records else None,
        "p50_ms": rnd(percentile(lat, 50), 1),
        "p95_ms": rnd(percentile(lat, 95), 1),
        "p99_ms": rnd(percentile(lat, 99), 1),
        "outage_p99_ms": rnd(percentile([latency(r) for r in during], 99), 1),
        "primary_attempts_during_outage": primary_attempts,
        "primary_share": rnd(sum(1 for r in records if r["served"] == "primary") / len(records), 4),
        "recovery_s": rnd(recovery, 2),
    }
    context = {
        "healthy_p99_ms": rnd(percentile([latency(r) for r in healthy], 99), 1),
        "outage_p50_ms": rnd(percentile([latency(r) for r in during], 50), 1),
        "client_primary_attempts_during_outage": client_out,
        "server_primary_requests_during_outage": server_out,
        "requests_arriving_during_outage": sum(1 for r in records if t_out <= t0 + r["arrival"] < t_rec),
        "slow_after_detection": slow_after_detection,
        "primary_attempts_after_detection": attempts_after_detection,
        "detected_after_s": rnd(None if first_failover is None else first_failover - t_out, 3),
        "errors": errors,
        "outage_window_s": rnd(t_rec - t_out, 3),
    }
    return {"figures": figures, "context": context, "plot": {
        "t_out": t_out - t0, "t_rec": t_rec - t0,
        "points": [(r["arrival"], latency(r), r["served"] if r["ok"] else "failed") for r in records],
        "attempts": [a - t0 for a in run["client_attempts"]],
    }}


def scenario(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "kind": kind,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "healthy_s": args.healthy_s,
        "outage_s": args.outage_s,
        "recovered_s": args.recovered_s,
        "cooldown_s": args.cooldown,
        "read_timeout_s": args.timeout,
        "connect_timeout_s": CONNECT_TIMEOUT,
        "retry_after_s": args.cooldown if kind == "http429" else None,
        "cooldown_windows_in_outage": round(args.outage_s / args.cooldown, 2),
        "arrival_rate_rps": round(args.requests / (args.healthy_s + args.outage_s + args.recovered_s), 2),
        "primary_attempts_counted": ("client-side: attempts started by the primary's HTTP client (port closed)"
                                     if kind == "refuse" else "server-side: requests the primary fake received"),
        "latency_measured": "successful requests, from scheduled arrival to answer",
    }


def print_table(kind: str, summaries: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    sc = scenario(kind, args)
    print(f"\n### Outage kind `{kind}`\n")
    print(f"{sc['requests']} requests at {sc['arrival_rate_rps']} req/s, ≤ {sc['concurrency']} in flight; "
          f"fake latency {sc['latency_ms']:g} ms; healthy {sc['healthy_s']:g} s → outage {sc['outage_s']:g} s "
          f"→ recovered {sc['recovered_s']:g} s; cooldown {sc['cooldown_s']:g} s "
          f"({sc['cooldown_windows_in_outage']} windows in the outage); timeouts: connect {CONNECT_TIMEOUT:g} s, "
          f"read {sc['read_timeout_s']:g} s." + (f" Retry-After: {args.cooldown:g} s." if kind == "http429" else ""))
    print()
    print("| strategy | success | p50 ms | p95 ms | p99 ms | healthy p99 ms | outage p99 ms "
          "| primary attempts in outage (client / server) | of which after detection | slow after detection "
          "| primary share | recovery s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in summaries.items():
        if "skipped" in s:
            print(f"| {name} | skipped: {s['skipped']} ||||||||||| ")
            continue
        f, c = s["figures"], s["context"]
        success = f"{f['success_rate'] * 100:.1f} %"
        print(f"| {name} | {success} | {fmt(f['p50_ms'], 1)} | {fmt(f['p95_ms'], 1)} | {fmt(f['p99_ms'], 1)} "
              f"| {fmt(c['healthy_p99_ms'], 1)} | {fmt(f['outage_p99_ms'], 1)} "
              f"| **{f['primary_attempts_during_outage']}** ({c['client_primary_attempts_during_outage']} / "
              f"{c['server_primary_requests_during_outage']}) "
              f"| {_dash(c['primary_attempts_after_detection'])} | {_dash(c['slow_after_detection'])} "
              f"| {f['primary_share'] * 100:.1f} % | {fmt(f['recovery_s'], 2)} |")
    failures = {n: s["context"]["errors"] for n, s in summaries.items() if "context" in s and s["context"]["errors"]}
    if failures:
        print("\nFailed requests by error: " + "; ".join(
            f"{n}: " + ", ".join(f"{k} ×{v}" for k, v in e.items()) for n, e in failures.items()))


def _dash(value: Any) -> str:
    return "—" if value is None else str(value)


def plot(all_summaries: dict[str, dict[str, dict[str, Any]]], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(all_summaries)
    strategies = list(next(iter(all_summaries.values())))
    fig, axes = plt.subplots(len(strategies), len(kinds), figsize=(4.6 * len(kinds), 2.1 * len(strategies)),
                             sharex=True, squeeze=False)
    colours = {"primary": "tab:blue", "fallback": "tab:orange", "failed": "tab:red"}
    for col, kind in enumerate(kinds):
        for row, name in enumerate(strategies):
            ax = axes[row][col]
            summary = all_summaries[kind][name]
            if row == 0:
                ax.set_title(f"outage: {kind}", fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{name}\nlatency ms", fontsize=8)
            if "skipped" in summary:
                ax.text(0.5, 0.5, f"skipped:\n{summary['skipped'][:60]}", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
                continue
            data = summary["plot"]
            ax.axvspan(data["t_out"], data["t_rec"], color="grey", alpha=0.18, lw=0)
            for served, colour in colours.items():
                xs = [p[0] for p in data["points"] if p[2] == served]
                ys = [max(p[1], 0.5) for p in data["points"] if p[2] == served]
                if xs:
                    ax.scatter(xs, ys, s=4 if served != "failed" else 9, c=colour,
                               marker="o" if served != "failed" else "x", label=served, linewidths=0.8)
            attempts = [a for a in data["attempts"] if data["t_out"] <= a < data["t_rec"]]
            ax.set_yscale("log")
            ax.set_ylim(5, max(args.timeout * 1000 * 8, 20000))
            if attempts:
                ax.plot(attempts, [6.5] * len(attempts), "|", color="black", ms=6, mew=0.8,
                        label="primary attempt (outage)")
            ax.tick_params(labelsize=7)
            f = summary["figures"]
            ax.text(0.99, 0.95, f"ok {f['success_rate'] * 100:.0f}%  dead-primary hits {f['primary_attempts_during_outage']}"
                                f"  back {fmt(f['recovery_s'], 1, ' s')}", ha="right", va="top", fontsize=6.5,
                    transform=ax.transAxes)
    for ax in axes[-1]:
        ax.set_xlabel("request arrival, s", fontsize=8)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, markerscale=2.5)
    fig.suptitle(f"Outage drill: {args.requests} requests, {args.latency_ms:g} ms providers, cooldown "
                 f"{args.cooldown:g} s, read timeout {args.timeout:g} s (grey: primary outage)", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main -------------------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, dict[str, Any]]]:
    from tests.fakes.redis_server import RedisServer, redis_server_available

    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    strategies = args.strategies or list(STRATEGIES)
    redis = RedisServer().start() if "luka-redis-2proc" in strategies and redis_server_available() else None
    out: dict[str, dict[str, dict[str, Any]]] = {}
    run_id = int(time.time())
    try:
        for kind in kinds:
            # Spawn (import, build, warm) every strategy's clients up front, while nothing is measured;
            # they then wait, idle, for their turn.
            print(f"… {kind}: starting clients for {', '.join(strategies)}", file=sys.stderr, flush=True)
            runs = []
            for name in strategies:
                run_id += 1
                runs.append(StrategyRun(kind, name, args, redis.url if redis else None, run_id))
            try:
                for run in runs:
                    await run.spawn()
                for run in runs:
                    await run.wait_ready()
                out[kind] = {}
                for run in runs:
                    print(f"… {kind}: {run.strategy}", file=sys.stderr, flush=True)
                    raw = await run.run()
                    await run.close()
                    if args.dump_raw:
                        with args.dump_raw.open("a") as dump:
                            dump.write(json.dumps({"kind": kind, **raw}) + "\n")
                    out[kind][run.strategy] = summarize(raw, args, kind)
            finally:
                for run in runs:
                    await run.close()
            print_table(kind, out[kind], args)
    finally:
        if redis is not None:
            redis.stop()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=[*KINDS, "all"], default="refuse")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, help="default: all five")
    parser.add_argument("--requests", type=int, default=480, help="R, spread evenly over the timeline")
    parser.add_argument("--concurrency", type=int, default=32, help="C: at most this many in flight")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="completion latency of both fakes")
    parser.add_argument("--cooldown", type=float, default=2.0, help="failure cooldown / Retry-After, seconds")
    parser.add_argument("--healthy-s", type=float, default=2.0)
    parser.add_argument("--outage-s", type=float, default=5.0)
    parser.add_argument("--recovered-s", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=2.0, help="per-attempt read timeout, seconds")
    parser.add_argument("--json", type=Path, help="figures as JSON (one kind: the documented shape; "
                                                  "--kind all: {kind: that shape})")
    parser.add_argument("--png", type=Path, help="timeline plot (matplotlib)")
    parser.add_argument("--dump-raw", type=Path, help="append every run's raw records (JSON lines), for digging")
    args = parser.parse_args(argv)
    if args.requests < 10 or args.cooldown <= 0 or args.concurrency < 2:
        parser.error("need --requests >= 10, --cooldown > 0, --concurrency >= 2")
    logging.basicConfig(level=logging.CRITICAL)
    started = time.time()
    out = asyncio.run(main_async(args))
    print(f"\n(drill wall time {time.time() - started:.0f} s)")
    if args.json:
        def shape(kind: str) -> dict[str, Any]:
            sc = scenario(kind, args)
            sc["context"] = {n: s["context"] for n, s in out[kind].items() if "context" in s}
            return {"scenario": sc, "strategies": {
                n: (s["figures"] if "figures" in s else {"skipped": s["skipped"]}) for n, s in out[kind].items()}}
        payload = shape(next(iter(out))) if len(out) == 1 else {kind: shape(kind) for kind in out}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    if args.png:
        plot(out, args.png, args)
        print(f"PNG written to {args.png}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Outage drill: the same request stream against each fallback strategy, through a scripted outage.

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
- ``luka-redis-2proc``  this project with ``RedisWithLocalFallback(RedisStateStore)`` on a local redis-server,
                        the load split over 2 processes (each its own engine) sharing it;
- ``luka-hedge``        ``luka-memory`` with ``hedge_delay=--hedge-delay`` (default 0.5 s): a primary
                        without a first token after the delay gets the fallback started beside it;
- ``luka-hedge-auto``   ``luka-memory`` with ``hedge_delay="auto"`` (warmed with 30 requests, so the
                        delay has learned the primary's time to first token, as a running bot has);
- ``luka-probes``       ``luka-memory`` with background recovery probes, ``recovery_probe_interval=--probe-interval``
                        (default 1 s), started as the bot's dispatcher starts them (``engine.background.start()``);
                        several ``--probe-interval`` values give one arm each (``luka-probes@<value>s``);
- ``luka-probes-redis-2proc``  ``luka-redis-2proc`` with the same probes (one prober for both processes).

The other ``luka-*`` arms run the engine's default, probes off (the first request after the
cooldown probes the primary). ``--probe-timeout`` sets the probe arms' ``engine.background.timeout``
(emulating a probe bounded by another timeout than the engine's ``CHECK_TIMEOUT``).

Every strategy uses the same client timeouts: connect 1 s, read ``--timeout`` (default 2 s; for
``slow`` --slow-s + 2 s, so the slow primary answers within it). Requests are streamed
(``model_request_stream``; LiteLLM ``stream=True``) unless ``--no-stream``: the time to the
first streamed event is the time to first token (TTFT).

Outage kinds: ``refuse`` (the primary's port is closed: ``FakeLLM.stop()``, then ``start()`` on the
same port), ``hang`` (accepts, never answers), ``slow`` (answers correctly, first token after
``--slow-s``, default 3 s), ``http500``, ``http429`` (``Retry-After: --cooldown``), ``none`` (no
outage: a healthy run, for the hedge rate of ``auto``).

Hedging figures (second table): TTFT p50/p99 overall and for requests arriving during the outage;
hedges fired (``HedgeEvent``s from the engine's listener); the fallback server's request count;
and "extra fallback calls": that count minus the one of ``luka-memory`` (the same engine without a
hedge) in the same drill — the calls the hedge bills to the fallback. Goal column: outage p99 ≤
hedge delay (the largest one a hedge used) + the arm's healthy p99.

Attempts on the dead primary during the outage: for ``hang``/``http500``/``http429`` the requests
the primary server received inside the outage window; for ``refuse`` nothing reaches a server, so
the client counts them: every strategy's primary HTTP client records each attempt it starts
(an httpx request event hook for the pydantic-ai/openai clients, LiteLLM's ``log_pre_api_call``
callback for the Router) — one attempt = one connection attempt on a closed port. Both counts are
printed for every kind, as a cross-check. Each attempt is also split into a user request or a
background recovery probe (the engine's 1-token request for ``CHECK_PROMPT``, ``max_tokens`` or
``max_completion_tokens`` = 1, recognised in the request body on both sides).

Third table of each kind, and a summary over all kinds at the end: back on the primary (below)
against LiteLLM's in the same run (goal: ≤); the dead-primary attempts by user requests and by
probes; the user requests in flight when the failure became known (at the first answer the
fallback gave during the outage, that request included) and the goal that user requests on the
dead primary stay within them; user attempts after detection; probes sent over the whole run.

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
    python benchmarks/outage_drill.py --kind slow --strategies luka-memory luka-hedge luka-hedge-auto

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
from _common import RedisProcess, exit_on_sigterm, fmt, percentile, rnd

from plugins.llm_fallback.checks import CHECK_PROMPT
from tests.fakes.fake_llm import FakeLLM

KINDS = ("refuse", "hang", "slow", "http500", "http429", "none")
STRATEGIES = ("direct", "fallbackmodel", "litellm", "luka-memory", "luka-redis-2proc", "luka-hedge", "luka-hedge-auto",
              "luka-probes", "luka-probes-redis-2proc")
HEDGED = ("luka-hedge", "luka-hedge-auto")
PROBED = ("luka-probes", "luka-probes-redis-2proc")
"""Arms with background recovery probes (`recovery_probe_interval=--probe-interval`)."""
TWO_PROCESSES = ("luka-redis-2proc", "luka-probes-redis-2proc")
"""Arms whose requests are split over 2 client processes sharing one redis-server."""
REFERENCE = "litellm"
"""The arm whose "back on the primary" time the other arms are held to (goal: ≤ it, same run)."""
NO_HEDGE_BASELINE = "luka-memory"
"""The arm a hedged arm's extra fallback calls are counted against (same engine and store, no hedge)."""
AUTO_WARM_REQUESTS = 30
"""`auto` learns the primary's time to first event from this many warm-up requests (as a running bot has)."""
CONNECT_TIMEOUT = 1.0
API_KEY = "sk-bench-not-a-secret"


# --- the fakes (parent process) ---------------------------------------------------------------------


def is_probe(body: Any) -> bool:
    """A background recovery probe: the engine's 1-token check of the prompt `CHECK_PROMPT`.

    `body` is a chat completion request (a parsed dict, or its JSON bytes as the client sends it)."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            return False
    if not isinstance(body, dict):
        return False
    one_token = 1 in (body.get("max_tokens"), body.get("max_completion_tokens"))
    return one_token and CHECK_PROMPT in json.dumps(body.get("messages"))


class TimedFakeLLM(FakeLLM):
    """A FakeLLM that also remembers when each chat completion request arrived, and whether it was a probe."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stamps: list[tuple[float, bool]] = []

    async def _read_body(self, request: Any) -> dict[str, Any]:  # type: ignore[override]
        body = await FakeLLM._read_body(request)
        self.stamps.append((time.time(), is_probe(body)))
        return body


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
    first: float | None = None
    """Absolute time of the first streamed event (the answer itself for a non-streamed call)."""


def _served_by(text: str) -> str | None:
    if "answer from primary" in text:
        return "primary"
    if "answer from fallback" in text:
        return "fallback"
    return None


async def _build(strategy: str, cfg: dict[str, Any], attempts: list[tuple[float, bool]],
                 events: dict[str, Any]) -> tuple[Any, Any]:
    """((ask, warm), closer) for one strategy; ``ask()`` returns (answer text, time of its first event).

    With ``cfg["stream"]`` every strategy streams (pydantic-ai ``model_request_stream``, LiteLLM
    ``stream=True``) and the first event's time is the time to first token; otherwise the first
    event is the whole response. ``events`` collects what the engine tells its listeners (hedges).
    ``attempts`` gets (time, is a probe) for every request the primary's HTTP client starts.
    """
    stream = cfg["stream"]
    primary_url, fallback_url = cfg["primary_url"], cfg["fallback_url"]
    read_timeout = cfg["timeout"]

    def on_attempt(path: str, body: bytes) -> None:
        if path.endswith("/chat/completions"):
            attempts.append((time.time(), is_probe(body)))

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
                    attempts.append((time.time(), False))  # the Router has no probes of its own

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

        async def ask(model: str = "primary") -> tuple[str, float | None]:
            if not stream:
                response = await router.acompletion(model=model, messages=[{"role": "user", "content": "hi"}])
                return response.choices[0].message.content or "", time.time()
            response = await router.acompletion(model=model, messages=[{"role": "user", "content": "hi"}],
                                                stream=True)
            first, parts = None, []
            async for chunk in response:
                if first is None:
                    first = time.time()
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
            return "".join(parts), first

        async def warm() -> None:
            await ask("primary")
            await ask("fallback")

        return (ask, warm), None

    import httpx2
    from openai import AsyncOpenAI
    from pydantic_ai import ModelRequest
    from pydantic_ai.direct import model_request, model_request_stream
    from pydantic_ai.models.fallback import FallbackModel
    from pydantic_ai.models.ollama import OllamaModel
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.ollama import OllamaProvider
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.settings import ModelSettings

    messages = [ModelRequest.user_text_prompt("hi")]

    async def hook(request: Any) -> None:
        on_attempt(request.url.path, request.content)

    def text_of(response: Any) -> str:
        return "".join(getattr(part, "content", "") or "" for part in response.parts)

    async def call(model: Any) -> tuple[str, float | None]:
        if not stream:
            response = await model_request(model, messages)
            return text_of(response), time.time()
        first = None
        async with model_request_stream(model, messages) as streamed:
            async for _ in streamed:
                if first is None:
                    first = time.time()
            response = streamed.get()
        return text_of(response), first

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

        async def ask() -> tuple[str, float | None]:
            return await call(model)

        async def warm() -> None:
            await call(primary)
            await call(fallback)

        async def close() -> None:
            await primary_client.close()
            await fallback_client.close()

        return (ask, warm), close

    # this project
    from pydantic import SecretStr

    from plugins.llm_fallback import (
        LLMFallbackModel,
        LLMProviderFallback,
        MemoryStateStore,
        ProviderSpec,
        RedisStateStore,
        RedisWithLocalFallback,
    )
    from plugins.llm_fallback.events import HedgeEvent

    store = (RedisWithLocalFallback(RedisStateStore.from_url(cfg["redis_url"], prefix=cfg["redis_prefix"]))
             if strategy in TWO_PROCESSES else MemoryStateStore())
    hedge_delay = {"luka-hedge": cfg["hedge_delay"], "luka-hedge-auto": "auto"}.get(strategy)
    engine = LLMProviderFallback(
        [ProviderSpec("ollama", "ollama", primary_url, ("m1",), timeout=read_timeout, connect_timeout=CONNECT_TIMEOUT),
         ProviderSpec("openai", "openai", fallback_url, ("g1",), api_key=SecretStr(API_KEY), timeout=read_timeout,
                      connect_timeout=CONNECT_TIMEOUT)],
        store, failure_cooldown=cfg["cooldown"], preferred_ttl=1800, hedge_delay=hedge_delay,
        recovery_probe_interval=cfg["probe_interval"] if strategy in PROBED else 0,
    )
    engine.clients["ollama"].client._client.event_hooks["request"].append(hook)
    if strategy in PROBED and cfg["probe_timeout"] is not None:
        engine.background.timeout = cfg["probe_timeout"]  # --probe-timeout: emulates a probe bounded otherwise
    engine.background.start()  # what setup_llm_fallback does on the dispatcher's start-up (nothing without probes)
    model = LLMFallbackModel(engine)
    events["hedges"] = []

    def on_event(event: Any) -> None:
        if isinstance(event, HedgeEvent):
            events["hedges"].append((time.time(), event.delay))

    engine.add_listener(on_event)

    async def ask() -> tuple[str, float | None]:
        return await call(model)

    async def warm() -> None:
        for _ in range(AUTO_WARM_REQUESTS if hedge_delay == "auto" else 1):
            await call(model)
        await call(engine.models["openai"]["g1"])

    async def close() -> None:
        if store.kind == "degraded":
            logging.getLogger("drill").warning("the Redis store degraded during the run")
        await engine.aclose()

    return (ask, warm), close


async def _client_main(strategy: str, cfg: dict[str, Any], schedule: list[tuple[int, float]], concurrency: int,
                       control: Any, results: Any, worker_id: int) -> None:
    """ready (built, warmed) → "go": warm again → armed → t0: run the schedule → done."""
    attempts: list[float] = []
    events: dict[str, Any] = {}
    try:
        (ask, warm), close = await _build(strategy, cfg, attempts, events)
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
    if "hedges" in events:
        events["hedges"].clear()
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
                    text, first = await ask()
                served = _served_by(text)
                records.append(Record(index, offset, start, time.time(), served is not None, served,
                                      None if served else f"unexpected answer {text[:60]!r}", first))
            except Exception as error:  # noqa: BLE001 - a failed request is a figure
                records.append(Record(index, offset, start, time.time(), False, None,
                                      f"{type(error).__name__}: {str(error)[:120]}"))

    await asyncio.gather(*(one(i, off) for i, off in schedule))
    if close is not None:
        await close()
    results.put(("done", worker_id, {"records": [asdict(r) for r in records], "attempts": attempts,
                                     "hedges": events.get("hedges")}))


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

    def __init__(self, kind: str, strategy: str, args: argparse.Namespace, redis_url: str | None, run_id: int,
                 probe_interval: float | None = None, label: str | None = None):
        self.kind, self.strategy, self.args = kind, strategy, args
        self.label = label or strategy
        self.probe_interval = probe_interval
        self.redis_url, self.run_id = redis_url, run_id
        self.processes = 2 if strategy in TWO_PROCESSES else 1
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
        if self.strategy in TWO_PROCESSES and self.redis_url is None:
            self.skipped = "redis-server is not installed"
            return
        schedule = [(i, i * self.total / args.requests) for i in range(args.requests)]
        cfg = {"primary_url": self.primary.v1_url, "fallback_url": self.fallback.v1_url, "timeout": args.timeout,
               "cooldown": args.cooldown, "redis_url": self.redis_url, "redis_prefix": f"drill{self.run_id}:",
               "stream": args.stream, "hedge_delay": args.hedge_delay, "probe_interval": self.probe_interval,
               "probe_timeout": args.probe_timeout}
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
        outcome: dict[str, Any] = {"strategy": self.label, "probe_interval": self.probe_interval}
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
        await end_outage(self.kind, primary, args)
        payloads = []
        for _ in self.workers:
            status, _, detail = await _get(self.results, self.total + args.timeout * 4 + 60)
            if status != "done":
                raise RuntimeError(f"{self.strategy}: client failed: {detail}")
            payloads.append(detail)
        records = sorted((r for p in payloads for r in p["records"]), key=lambda r: r["index"])
        attempts = sorted(a for p in payloads for a in p["attempts"])
        hedges = None if all(p["hedges"] is None for p in payloads) else sorted(
            h for p in payloads for h in (p["hedges"] or []))
        return {**outcome, "t0": t0, "t_out": t_out, "t_rec": t_rec, "records": records,
                "client_attempts": attempts, "server_primary": list(primary.stamps),
                "server_fallback": len(self.fallback.stamps), "hedges": hedges}

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
    if kind == "none":
        return
    if kind == "refuse":
        await primary.stop()
    elif kind == "slow":
        primary.latency = args.slow_s  # answers correctly, but its first token comes after --slow-s
    elif kind == "http429":
        primary.set_mode("http429", retry_after=args.cooldown)
    else:
        primary.set_mode(kind)


async def end_outage(kind: str, primary: TimedFakeLLM, args: argparse.Namespace) -> None:
    if kind == "refuse":
        await primary.start(primary.port)
    primary.set_mode("ok", latency=args.latency_ms / 1000.0)


# --- figures ---------------------------------------------------------------------------------------------


def summarize(run: dict[str, Any], args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The published figures (JSON shape) plus the context figures printed in the table."""
    if "skipped" in run:
        return {"skipped": run["skipped"]}
    records, t0, t_out, t_rec = run["records"], run["t0"], run["t_out"], run["t_rec"]

    def latency(r: dict[str, Any]) -> float:
        return (r["end"] - (t0 + r["arrival"])) * 1000.0

    def ttft(r: dict[str, Any]) -> float:
        return ((r["first"] or r["end"]) - (t0 + r["arrival"])) * 1000.0

    ok = [r for r in records if r["ok"]]
    during = [r for r in ok if t_out <= t0 + r["arrival"] < t_rec]
    # baseline: answered before the outage began (kind "none": every request)
    healthy = ok if kind == "none" else [r for r in ok if r["end"] < t_out]
    client_out = sum(1 for a, _ in run["client_attempts"] if t_out <= a < t_rec)
    server_out = sum(1 for a, _ in run["server_primary"] if t_out <= a < t_rec)
    primary_attempts = client_out if kind == "refuse" else server_out
    # (time, is a background probe) of every request the primary got (refuse: its client started)
    source = run["client_attempts"] if kind == "refuse" else run["server_primary"]
    probes_in_outage = sum(1 for a, probe in source if probe and t_out <= a < t_rec)

    # Back on the primary: the first request arriving after recovery from which on every request
    # was answered by the primary; report when that request finished.
    after = [r for r in records if t0 + r["arrival"] >= t_rec]
    recovery = None
    for position, record in enumerate(after):
        if all(r["served"] == "primary" for r in after[position:]):
            recovery = max(0.0, record["end"] - t_rec)
            break

    # hang: who paid the timeout? Requests arriving after the first fallback answer (detection)
    # that still took >= the timeout: with a working cooldown only the probes.
    first_fallback = min((r["end"] for r in ok if r["served"] == "fallback" and r["end"] >= t_out), default=None)
    slow_after_detection = None
    if first_fallback is not None:
        slow_after_detection = sum(1 for r in records if t0 + r["arrival"] >= first_fallback
                                   and t0 + r["arrival"] < t_rec and latency(r) >= args.timeout * 1000 * 0.95)
    # Attempts on the dead primary once its failure was known (after the first fallback answer):
    # with a working cooldown, one half-open probe per cooldown window.
    attempts_after_detection = (None if first_fallback is None
                                else sum(1 for a, _ in source if first_fallback <= a < t_rec))
    user_after_detection = (None if first_fallback is None
                            else sum(1 for a, probe in source if first_fallback <= a < t_rec and not probe))
    # The bound for user requests on the dead primary: those already on their way when the failure
    # became known (in flight at the first fallback answer of the outage, that request included).
    in_flight_at_detection = (None if first_fallback is None
                              else sum(1 for r in records if r["start"] <= first_fallback <= r["end"]))
    errors: dict[str, int] = {}
    for r in records:
        if not r["ok"]:
            key = (r["error"] or "?").split(":")[0]
            errors[key] = errors.get(key, 0) + 1

    hedges = run.get("hedges")
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
        "ttft_p50_ms": rnd(percentile([ttft(r) for r in ok], 50), 1),
        "ttft_p99_ms": rnd(percentile([ttft(r) for r in ok], 99), 1),
        "outage_ttft_p50_ms": rnd(percentile([ttft(r) for r in during], 50), 1),
        "outage_ttft_p99_ms": rnd(percentile([ttft(r) for r in during], 99), 1),
        "hedges_fired": None if hedges is None else len(hedges),
        "hedged_share": None if hedges is None else rnd(len(hedges) / len(records), 4),
        "fallback_calls": run["server_fallback"],
        "primary_user_attempts_during_outage": primary_attempts - probes_in_outage,
        "primary_probes_during_outage": probes_in_outage,
        "probes_sent": sum(1 for _, probe in source if probe),
    }
    context = {
        "healthy_p99_ms": rnd(percentile([latency(r) for r in healthy], 99), 1),
        "outage_p50_ms": rnd(percentile([latency(r) for r in during], 50), 1),
        "client_primary_attempts_during_outage": client_out,
        "server_primary_requests_during_outage": server_out,
        "requests_arriving_during_outage": sum(1 for r in records if t_out <= t0 + r["arrival"] < t_rec),
        "slow_after_detection": slow_after_detection,
        "primary_attempts_after_detection": attempts_after_detection,
        "detected_after_s": rnd(None if first_fallback is None else first_fallback - t_out, 3),
        "errors": errors,
        "outage_window_s": rnd(t_rec - t_out, 3),
        "healthy_ttft_p99_ms": rnd(percentile([ttft(r) for r in healthy], 99), 1),
        "hedges_in_healthy_phase": None if hedges is None else sum(1 for t, _ in hedges if t < t_out),
        "requests_in_healthy_phase": sum(1 for r in records if t0 + r["arrival"] < t_out),
        "hedge_delay_s": None if not hedges else rnd(max(d for _, d in hedges), 3),
        "probe_interval_s": run.get("probe_interval"),
        "user_attempts_after_detection": user_after_detection,
        "in_flight_at_detection": in_flight_at_detection,
    }
    return {"figures": figures, "context": context, "plot": {
        "t_out": t_out - t0, "t_rec": t_rec - t0,
        "points": [(r["arrival"], latency(r), r["served"] if r["ok"] else "failed") for r in records],
        "attempts": [(a - t0, probe) for a, probe in source],
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
        "slow_first_token_s": args.slow_s if kind == "slow" else None,
        "streamed": args.stream,
        "hedge_delay_s": args.hedge_delay,
        "probe_interval_s": args.probe_interval,
        "probe_timeout_s": args.probe_timeout,
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
          f"read {sc['read_timeout_s']:g} s." + (f" Retry-After: {args.cooldown:g} s." if kind == "http429" else "")
          + (f" Slow primary: first token after {args.slow_s:g} s." if kind == "slow" else "")
          + (" No outage (a healthy run)." if kind == "none" else "")
          + f" Requests {'streamed' if args.stream else 'not streamed'}; luka-hedge: hedge delay "
            f"{args.hedge_delay:g} s; luka-hedge-auto: `auto`; luka-probes: probe interval "
            f"{', '.join(f'{v:g}' for v in args.probe_interval)} s, probe timeout "
          + (f"{args.probe_timeout:g} s (emulated)." if args.probe_timeout is not None else "the engine's."))
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
    print_hedge_table(summaries)
    print_recovery_table(summaries)
    failures = {n: s["context"]["errors"] for n, s in summaries.items() if "context" in s and s["context"]["errors"]}
    if failures:
        print("\nFailed requests by error: " + "; ".join(
            f"{n}: " + ", ".join(f"{k} ×{v}" for k, v in e.items()) for n, e in failures.items()))


def extra_fallback_calls(summaries: dict[str, dict[str, Any]], name: str) -> int | None:
    """Fallback calls the hedged arm made beyond the same engine without a hedge (the hedge's price)."""
    base = summaries.get(NO_HEDGE_BASELINE, {})
    if "figures" not in base or "figures" not in summaries[name]:
        return None
    return summaries[name]["figures"]["fallback_calls"] - base["figures"]["fallback_calls"]


def hedge_goal(s: dict[str, Any]) -> str:
    """Goal: outage p99 ≤ hedge delay + healthy p99 (with a hedge fired; else nothing to check).

    Checked for the answer's latency and for the time to first token."""
    f, c = s["figures"], s["context"]
    if c["hedge_delay_s"] is None:
        return "—"
    verdicts = []
    for label, outage, healthy in (("answer", f["outage_p99_ms"], c["healthy_p99_ms"]),
                                   ("TTFT", f["outage_ttft_p99_ms"], c["healthy_ttft_p99_ms"])):
        if outage is None or healthy is None:
            continue
        bound = c["hedge_delay_s"] * 1000 + healthy
        verdicts.append(f"{label} {'met' if outage <= bound else 'MISSED'} ({outage:.0f} vs ≤ {bound:.0f})")
    return "; ".join(verdicts) or "—"


def print_hedge_table(summaries: dict[str, dict[str, Any]]) -> None:
    print()
    print("| strategy | TTFT p50 ms | TTFT p99 ms | outage TTFT p50 ms | outage TTFT p99 ms | hedges fired "
          "(% of requests) | hedges in healthy phase | hedge delay s | fallback calls | extra fallback calls "
          f"vs {NO_HEDGE_BASELINE} | goal: outage p99 ≤ delay + healthy p99 (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, s in summaries.items():
        if "skipped" in s:
            continue
        f, c = s["figures"], s["context"]
        hedges = "—" if f["hedges_fired"] is None else f"{f['hedges_fired']} ({f['hedged_share'] * 100:.1f} %)"
        healthy = ("—" if c["hedges_in_healthy_phase"] is None
                   else f"{c['hedges_in_healthy_phase']} of {c['requests_in_healthy_phase']}")
        extra = extra_fallback_calls(summaries, name) if name in HEDGED else None
        print(f"| {name} | {fmt(f['ttft_p50_ms'], 1)} | {fmt(f['ttft_p99_ms'], 1)} | {fmt(f['outage_ttft_p50_ms'], 1)} "
              f"| {fmt(f['outage_ttft_p99_ms'], 1)} | {hedges} | {healthy} | {fmt(c['hedge_delay_s'], 2)} "
              f"| {f['fallback_calls']} | {_dash(extra)} | {hedge_goal(s) if name in HEDGED else ''} |")


def back_goal(summaries: dict[str, dict[str, Any]], name: str) -> str:
    """Goal: back on the primary no later than LiteLLM's Router in the same run."""
    mine = summaries[name]["figures"]["recovery_s"]
    reference = summaries.get(REFERENCE, {}).get("figures", {}).get("recovery_s")
    if name == REFERENCE or reference is None:
        return "—"
    if mine is None:
        return "MISSED (not back)"
    return f"{'met' if mine <= reference else 'MISSED'} ({mine:.2f} vs ≤ {reference:.2f})"


def user_goal(s: dict[str, Any]) -> str:
    """Goal: user requests on the dead primary ≤ the user requests in flight when its failure became known."""
    users, bound = s["figures"]["primary_user_attempts_during_outage"], s["context"]["in_flight_at_detection"]
    if bound is None:
        return "—"
    return f"{'met' if users <= bound else 'MISSED'} ({users} vs ≤ {bound})"


def print_recovery_table(summaries: dict[str, dict[str, Any]]) -> None:
    print()
    print("| strategy | probe interval s | back on the primary s | goal: ≤ litellm's | dead-primary attempts "
          "| by user requests | by background probes | user requests in flight at detection "
          "| user attempts after detection | goal: user attempts ≤ in flight | probes sent (whole run) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|")
    for name, s in summaries.items():
        if "skipped" in s:
            continue
        f, c = s["figures"], s["context"]
        print(f"| {name} | {fmt(c['probe_interval_s'], 2) if c['probe_interval_s'] else '—'} "
              f"| {fmt(f['recovery_s'], 2)} | {back_goal(summaries, name)} "
              f"| **{f['primary_attempts_during_outage']}** | {f['primary_user_attempts_during_outage']} "
              f"| {f['primary_probes_during_outage']} | {_dash(c['in_flight_at_detection'])} "
              f"| {_dash(c['user_attempts_after_detection'])} | {user_goal(s)} | {f['probes_sent']} |")


def print_summary(out: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Every kind in one table: back on the primary and dead-primary attempts (users + probes)."""
    print("\n### Back on the primary, every kind\n")
    print("| fault | strategy | dead-primary attempts: users + probes | back on the primary s |")
    print("|---|---|---:|---:|")
    for kind, summaries in out.items():
        for name, s in summaries.items():
            if "figures" in s:
                f = s["figures"]
                print(f"| {kind} | {name} | {f['primary_user_attempts_during_outage']} + "
                      f"{f['primary_probes_during_outage']} | {fmt(f['recovery_s'], 2)} |")


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
            if kind != "none":
                ax.axvspan(data["t_out"], data["t_rec"], color="grey", alpha=0.18, lw=0)
            for served, colour in colours.items():
                xs = [p[0] for p in data["points"] if p[2] == served]
                ys = [max(p[1], 0.5) for p in data["points"] if p[2] == served]
                if xs:
                    ax.scatter(xs, ys, s=4 if served != "failed" else 9, c=colour,
                               marker="o" if served != "failed" else "x", label=served, linewidths=0.8)
            attempts = [(a, probe) for a, probe in data["attempts"] if data["t_out"] <= a < data["t_rec"]]
            ax.set_yscale("log")
            ax.set_ylim(5, max((args.timeout or 2.0) * 1000 * 8, 20000))
            for probes, colour, label in ((False, "black", "primary attempt (outage)"),
                                          (True, "tab:green", "recovery probe (outage)")):
                xs = [a for a, probe in attempts if probe is probes]
                if xs:
                    ax.plot(xs, [6.5] * len(xs), "|", color=colour, ms=6, mew=0.8, label=label)
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
                 f"{args.cooldown:g} s, read timeout {args.timeout or 2.0:g} s ({args.slow_s + 2:g} s for slow; "
                 f"grey: primary outage)", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main -------------------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, dict[str, Any]]]:
    kinds = list(KINDS) if "all" in args.kind else list(dict.fromkeys(args.kind))
    strategies = args.strategies or list(STRATEGIES)
    arms = [(name, None, name) if name not in PROBED else
            (name, interval, name if len(args.probe_interval) == 1 else f"{name}@{interval:g}s")
            for name in strategies for interval in (args.probe_interval if name in PROBED else [None])]
    wants_redis = any(name in TWO_PROCESSES for name in strategies)
    redis = RedisProcess().start() if wants_redis and RedisProcess.available() else None
    out: dict[str, dict[str, dict[str, Any]]] = {}
    run_id = int(time.time())
    try:
        for kind in kinds:
            # Spawn (import, build, warm) every strategy's clients up front, while nothing is measured;
            # they then wait, idle, for their turn.
            print(f"… {kind}: starting clients for {', '.join(label for *_, label in arms)}", file=sys.stderr,
                  flush=True)
            kind_args = for_kind(args, kind)
            runs = []
            for name, interval, label in arms:
                run_id += 1
                runs.append(StrategyRun(kind, name, kind_args, redis.url if redis else None, run_id, interval, label))
            try:
                for run in runs:
                    await run.spawn()
                for run in runs:
                    await run.wait_ready()
                out[kind] = {}
                for run in runs:
                    print(f"… {kind}: {run.label}", file=sys.stderr, flush=True)
                    raw = await run.run()
                    await run.close()
                    if args.dump_raw:
                        with args.dump_raw.open("a") as dump:
                            dump.write(json.dumps({"kind": kind, **raw}) + "\n")
                    out[kind][run.label] = summarize(raw, kind_args, kind)
            finally:
                for run in runs:
                    await run.close()
            print_table(kind, out[kind], kind_args)
        print_summary(out)
    finally:
        if redis is not None:
            redis.stop()
    return out


def for_kind(args: argparse.Namespace, kind: str) -> argparse.Namespace:
    """The arguments of one kind: the read timeout defaults to 2 s, and for `slow` to --slow-s + 2 s,
    so the slow primary does answer within it (it is slow, not dead; a real Ollama timeout is 60 s)."""
    kind_args = argparse.Namespace(**vars(args))
    if args.timeout is None:
        kind_args.timeout = args.slow_s + 2.0 if kind == "slow" else 2.0
    return kind_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", nargs="+", choices=[*KINDS, "all"], default=["refuse"],
                        help="one or more kinds, or all")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, help="default: all of them")
    parser.add_argument("--requests", type=int, default=480, help="R, spread evenly over the timeline")
    parser.add_argument("--concurrency", type=int, default=32, help="C: at most this many in flight")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="completion latency of both fakes")
    parser.add_argument("--cooldown", type=float, default=2.0, help="failure cooldown / Retry-After, seconds")
    parser.add_argument("--healthy-s", type=float, default=2.0)
    parser.add_argument("--outage-s", type=float, default=5.0)
    parser.add_argument("--recovered-s", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=None,
                        help="per-attempt read timeout, seconds (default 2; kind slow: --slow-s + 2)")
    parser.add_argument("--slow-s", type=float, default=3.0, help="kind slow: the primary's time to first token")
    parser.add_argument("--hedge-delay", type=float, default=0.5, help="luka-hedge: fixed hedge delay, seconds")
    parser.add_argument("--probe-interval", type=float, nargs="+", default=[1.0],
                        help="luka-probes*: recovery_probe_interval, seconds; several values: one arm each "
                             "(named luka-probes@<value>s)")
    parser.add_argument("--probe-timeout", type=float, default=None,
                        help="luka-probes*: emulate another timeout for the background probe (seconds; default: "
                             "the engine's own, background.CHECK_TIMEOUT)")
    parser.add_argument("--no-stream", dest="stream", action="store_false",
                        help="non-streamed requests (time to first token = time to the whole answer)")
    parser.add_argument("--json", type=Path, help="figures as JSON (one kind: the documented shape; "
                                                  "--kind all: {kind: that shape})")
    parser.add_argument("--png", type=Path, help="timeline plot (matplotlib)")
    parser.add_argument("--dump-raw", type=Path, help="append every run's raw records (JSON lines), for digging")
    args = parser.parse_args(argv)
    if args.requests < 10 or args.cooldown <= 0 or args.concurrency < 2 or min(args.probe_interval) <= 0:
        parser.error("need --requests >= 10, --cooldown > 0, --concurrency >= 2, --probe-interval > 0")
    exit_on_sigterm()
    logging.basicConfig(level=logging.CRITICAL)
    started = time.time()
    out = asyncio.run(main_async(args))
    print(f"\n(drill wall time {time.time() - started:.0f} s)")
    if args.json:
        def shape(kind: str) -> dict[str, Any]:
            sc = scenario(kind, for_kind(args, kind))
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

#!/usr/bin/env python
"""The CPU cost of one private message, split into pydantic-ai, the fallback layer, and the rest.

One message = a user's first message in a new thread: one chat reply and one thread name (two
LLM calls, run concurrently as the bot runs them). Everything real except the network's far ends:

- the bot: ``luka_bot.core.loader.build_app`` with real ``Settings`` (Redis stores, both
  providers, the bot's own logging set-up writing to a file), updates fed to the real
  ``Dispatcher`` with ``feed_raw_update`` (the JSON a long poll returns), Bot API calls going over
  HTTP to ``tests/fakes/fake_telegram.py``;
- the providers: ``tests/fakes/fake_llm.py`` (ollama = primary, openai = fallback), the Bot API
  fake and ``redis-server`` each in their own process, all on 127.0.0.1 — so this process's CPU
  time (``time.process_time``) is the bot's alone.

Five arms, interleaved message by message in rotating order (drift hits them alike), each
sample the CPU time of one message:

- ``bot``: the whole message through the dispatcher (``total``);
- ``unlimited``: the same, without the per-user limits (their middleware unregistered for that
  message) — (e) = ``bot`` − ``unlimited``: what the limits cost per message (the rate's Redis
  round trip; with ``--quota`` also the quota's read and each run's count);
- ``inbox``: the same, recorded in the durable inbox first as polling and the webhook do (its
  Redis round trips: the record, the finish) — (d) = ``inbox`` − ``bot``, goal: ≤ 10 % of ``bot``;
- ``fallback``: the same two LLM calls (same prompts, same settings, a fresh ``Agent`` per call as
  the bot makes) through ``LLMFallbackModel`` over the bot's own engine and Redis store;
- ``bare``: the same two calls on a plain pydantic-ai ``Agent`` over the engine's own model object
  for the primary (the same ``OpenAIChatModel``/HTTP client, no fallback layer).

Figures (medians over the samples): (a) = ``bare``; (b) = ``fallback`` − ``bare`` (the fallback
layer); (c) = ``bot`` − ``fallback`` (stores, Telegram calls, drafts, i18n, logging, dispatcher).
Goal of issue 8: (b) + (c) ≤ 0.5 × (a).

With ``--stream`` (default: the bot's ``STREAMING`` setting when it has one, else off) the chat
call of ``bare``/``fallback`` streams (``Agent.run_stream`` + ``stream_text``) as the bot does.
With ``--markdown-reply`` the providers answer a model-like Markdown answer (``tests/model_answers.py``:
headings, lists, code, a table, a link) instead of one short line: what rendering costs.
With ``--history N`` each message continues a thread that already holds N turns (a user message
of ``--history-chars`` characters and its answer; written before the sample is measured): one chat
call with that history in every arm, no thread name (the thread has one). What fitting the prompt
to the context window costs; ``--context-window`` sets ollama's (``LLM_CONTEXT_WINDOWS``; unset:
4096, Ollama's default).

``--arms bot fallback bare`` leaves the ``inbox`` and ``unlimited`` arms out: the three arms and rotation of this
benchmark before the inbox, for comparisons with it. The arms are not independent: on a 2-core
machine a ``fallback`` message right after a ``bot`` message measured 1.7 ms more CPU than one
right after a ``bare`` message (the bot as of the send pacer; 0.3 ms before it), which puts
1–1.8 ms into (b) that the fallback layer alone does not cost (docs/performance.md, section 10).

    python benchmarks/message_cost.py [--messages 300] [--profile 200] [--profile-out prof.txt] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import logging
import multiprocessing as mp
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FakeLLMProcess, RedisProcess, exit_on_sigterm, fmt

TOKEN = "424242:BENCH-token-not-a-real-one"
OPENAI_KEY = "sk-bench-not-a-secret"
ARMS = ("bot", "unlimited", "inbox", "fallback", "bare")
TEXTS = (
    "What is a good name for a grey cat?",
    "How long should I boil an egg?",
    "Explain recursion in one sentence.",
    "Сколько будет 17 умножить на 23?",
)


# --- the fake Bot API in its own process ----------------------------------------------------------------


def _telegram_process(ready: Any, stop: Any) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fakes.fake_telegram import FakeTelegram

    async def serve() -> None:
        fake = await FakeTelegram(token=TOKEN, strict_chats=False).start()
        ready.put(fake.url)
        await asyncio.to_thread(stop.get)
        await fake.stop()

    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(serve())


class FakeTelegramProcess:
    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._ready, self._stop = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=_telegram_process, args=(self._ready, self._stop), daemon=True)
        self.process.start()
        self.url: str = self._ready.get(timeout=60)

    def stop(self) -> None:
        self._stop.put(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)


# --- the bot and the arms --------------------------------------------------------------------------------


def build_settings(telegram_url: str, redis_url: str, primary: FakeLLMProcess, fallback: FakeLLMProcess,
                   streaming: bool | None, context_window: int | None = None, quota: int = 0) -> Any:
    from luka_bot.core.config import Settings

    values: dict[str, Any] = {
        "BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": telegram_url, "REDIS_URL": redis_url, "OLLAMA_URL": primary.url,
        "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fallback.v1_url,
        "AVAILABLE_PROVIDERS": {"ollama": ["m1"], "openai": ["g1"]}, "LOG_LEVEL": "INFO",
        "USER_DAILY_TOKENS": quota,
    }
    if streaming is not None and "STREAMING" in Settings.model_fields:
        values["STREAMING"] = "on" if streaming else "off"
    if context_window is not None:  # ignored by a bot version without the setting
        values["LLM_CONTEXT_WINDOWS"] = {"ollama": context_window}
    return Settings(_env_file=None, **values)


def update_json(update_id: int, user_id: int, text: str) -> dict[str, Any]:
    user = {"id": user_id, "is_bot": False, "first_name": "Bench", "language_code": "ru" if text[0] > "z" else "en"}
    return {"update_id": update_id, "message": {
        "message_id": 1, "date": int(time.time()), "chat": {"id": user_id, "type": "private", "first_name": "Bench"},
        "from": user, "text": text}}


class Arms:
    """The ways to spend one message (the arms), each returning when its work is done."""

    def __init__(self, app: Any, stream: bool, history: int = 0, history_chars: int = 1500):
        from pydantic_ai import Agent

        from luka_bot.services.agent_factory import SYSTEM_PROMPT, calculate, current_datetime
        from luka_bot.services.llm_model_factory import NAME_GENERATOR_SETTINGS, LLMModelFactory
        from luka_bot.services.thread_names import MAX_NAME_LENGTH

        self.app = app
        self.stream = stream
        self.factory = LLMModelFactory(app.fallback)
        self.Agent = Agent
        self.tools = [current_datetime, calculate]
        self.system_prompt = SYSTEM_PROMPT
        self.name_settings = NAME_GENERATOR_SETTINGS
        self.max_name = MAX_NAME_LENGTH
        self.bare_model = app.fallback.models["ollama"]["m1"]  # the engine's own model: same HTTP client
        # (a) and (b) are the calls, not building agents: one chat agent and one name agent, built once,
        # the model given per run (the bot builds both agents per message: that counts in (c)).
        self.chat_agent = Agent(None, instructions=self.system_prompt, tools=self.tools, name="luka")
        _, name_prompt = self.factory.name_generator(language="en", max_length=self.max_name)
        self.name_agent = Agent(None, instructions=name_prompt)
        self.update_id = 0
        self.user_id = 10_000_000
        self.history_turns = [((f"Earlier question {n}: " + "tell me more about it " * history_chars)[:history_chars],
                               f"Earlier answer {n}: " + "here is what I know. " * 20) for n in range(history)]
        self.history = self._messages(self.history_turns)
        self._prepared: int | None = None

    @staticmethod
    def _messages(turns: list[tuple[str, str]]) -> list[Any]:
        from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

        return [m for question, answer in turns
                for m in (ModelRequest(parts=[UserPromptPart(question)]), ModelResponse(parts=[TextPart(answer)]))]

    def next_user(self) -> int:
        self.user_id += 1
        return self.user_id

    async def prepare(self, arm: str) -> None:
        """Unmeasured: a user whose current thread holds the history (the bot arms read it from its store)."""
        if arm not in ("bot", "unlimited", "inbox") or not self.history_turns:
            return
        user = self.next_user()
        conversations = self.app.dp["conversations"]
        thread = await conversations.start_thread(user)
        for question, answer in self.history_turns:
            await conversations.add_turn(user, thread, question, answer)
        self._prepared = user

    async def bot(self, text: str) -> None:
        self.update_id += 1
        user, self._prepared = self._prepared or self.next_user(), None
        await self.app.dp.feed_raw_update(self.app.bot, update_json(self.update_id, user, text))

    async def unlimited(self, text: str) -> None:
        from luka_bot.core.user_limits import UserLimitsMiddleware

        observer = self.app.dp.message.middleware
        limits = [m for m in observer if isinstance(m, UserLimitsMiddleware)]
        for middleware in limits:
            observer.unregister(middleware)
        try:
            await self.bot(text)
        finally:
            for middleware in limits:
                observer.register(middleware)

    async def inbox(self, text: str) -> None:
        from aiogram.types import Update

        self.update_id += 1
        user, self._prepared = self._prepared or self.next_user(), None
        update = Update.model_validate(update_json(self.update_id, user, text), context={"bot": self.app.bot})
        await self.app.inbox.accept([update])  # what the polling middleware and the webhook handler do
        await self.app.dp.feed_update(self.app.bot, update)

    async def limits_alone(self) -> None:
        """What the per-user limits do for one message, alone: the check (with a quota, also one run's count)."""
        from luka_bot.core.user_limits import find_user_limits

        limits = find_user_limits(self.app.dp)
        assert limits is not None
        user = self.next_user()
        await limits.check(user)
        if limits.quota is not None:
            await limits.quota.add(user, 100)

    def build_agents(self) -> None:
        """What the bot does per message besides the calls: build its two agents (context figure)."""
        _, prompt = self.factory.name_generator(language="en", max_length=self.max_name)
        self.Agent(self.bare_model, instructions=self.system_prompt, tools=self.tools, name="luka")
        self.Agent(self.bare_model, instructions=prompt)

    async def _chat(self, model: Any, text: str) -> str:
        if not self.stream:
            return (await self.chat_agent.run(text, model=model, message_history=self.history)).output
        async with self.chat_agent.run_stream(text, model=model, message_history=self.history) as result:
            async for _ in result.stream_text(delta=True):
                pass
            return await result.get_output()

    async def _name(self, model: Any, text: str, settings: Any) -> str:
        return (await self.name_agent.run(text[:2000], model=model, model_settings=settings)).output

    async def fallback(self, text: str) -> None:
        user = self.next_user()
        chat_model = self.factory.create(context=f"chat:{user}")
        if self.history:  # a thread that has its name already
            await self._chat(chat_model, text)
            return
        name_model, _ = self.factory.name_generator(language="en", max_length=self.max_name)
        await asyncio.gather(self._chat(chat_model, text), self._name(name_model, text, None))

    async def bare(self, text: str) -> None:
        self.next_user()
        if self.history:
            await self._chat(self.bare_model, text)
            return
        await asyncio.gather(self._chat(self.bare_model, text), self._name(self.bare_model, text, self.name_settings))


def pin_telegram_responses(bot: Any) -> None:
    """Emulates a proposed fix (``--emulate-fix pin-responses``): keep aiogram's ``Response[T]`` classes alive.

    aiogram's ``check_response`` builds ``Response[method.__returning__]`` for every API call;
    pydantic caches parametrized generic models in a ``WeakValueDictionary``, so once the garbage
    collector has freed the class, the next call rebuilds it (schema + validator: milliseconds of
    CPU). A request middleware holding a strong reference per return type makes it a cache hit.
    """
    from aiogram.client.session.middlewares.base import BaseRequestMiddleware
    from aiogram.methods.base import Response

    pinned: dict[Any, Any] = {}

    class PinResponseModels(BaseRequestMiddleware):
        async def __call__(self, make_request: Any, bot: Any, method: Any) -> Any:
            returning = method.__returning__
            if returning not in pinned:
                pinned[returning] = Response[returning]
            return await make_request(bot, method)

    bot.session.middleware(PinResponseModels())


class _ModelBound:
    """An agent built once, run with a per-message model (``Agent.run(..., model=...)``)."""

    def __init__(self, agent: Any, model: Any):
        self.agent, self.model = agent, model

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.agent, name)
        if name in ("run", "run_stream", "run_stream_events", "iter"):
            return lambda *args, **kwargs: method(*args, model=self.model, **kwargs)
        return method


def reuse_agents() -> None:
    """Emulates a proposed fix (``--emulate-fix reuse-agents``): the chat and thread-name agents are
    built once per process and given the message's fallback model at run time, instead of a new
    ``Agent`` (tool schemas and all) per message. Patches the two call sites' module globals."""
    from pydantic_ai import Agent

    import luka_bot.handlers.chat as chat_module
    import luka_bot.services.thread_names as names_module
    from luka_bot.services.agent_factory import SYSTEM_PROMPT, calculate, current_datetime

    chat_agent = Agent(None, instructions=SYSTEM_PROMPT, tools=[current_datetime, calculate], name="luka")
    name_agents: dict[str, Any] = {}

    async def create_agent(user_id: int, models: Any = None) -> Any:
        return _ModelBound(chat_agent, models.create(context=f"chat:{user_id}"))

    def name_agent(model: Any, *, instructions: str) -> Any:
        agent = name_agents.get(instructions)
        if agent is None:
            agent = name_agents[instructions] = Agent(None, instructions=instructions)
        return _ModelBound(agent, model)

    chat_module.create_static_agent_with_basic_tools = create_agent
    names_module.Agent = name_agent


async def cpu_ms(work: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(CPU ms of this process, wall ms) spent while `work` ran (nothing else runs meanwhile)."""
    cpu, wall = time.process_time(), time.perf_counter()
    await work()
    return (time.process_time() - cpu) * 1000.0, (time.perf_counter() - wall) * 1000.0


async def measure(arms: Arms, messages: int, names: tuple[str, ...] = ARMS) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {a: {"cpu": [], "wall": []} for a in names}
    for i in range(messages):
        text = TEXTS[i % len(TEXTS)]
        for step in range(len(names)):
            arm = names[(i + step) % len(names)]
            await arms.prepare(arm)
            cpu, wall = await cpu_ms(lambda arm=arm, text=text: getattr(arms, arm)(text))
            samples[arm]["cpu"].append(cpu)
            samples[arm]["wall"].append(wall)
    return samples


async def profile_pyinstrument(arms: Arms, messages: int, out: Path | None) -> str:
    """pyinstrument (statistical, low overhead) of `messages` bot messages, as a call tree."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    for i in range(messages):
        await arms.bot(TEXTS[i % len(TEXTS)])
    profiler.stop()
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    if out is not None:
        out.write_text(text)
    return text


async def profile(arms: Arms, messages: int, out: Path | None, top: int, callers: list[str]) -> str:
    """cProfile of `messages` bot messages: the top entries by own time and by cumulative time."""
    profiler = cProfile.Profile(time.process_time)  # CPU time: waits on the fakes cost nothing
    profiler.enable()
    for i in range(messages):
        await arms.bot(TEXTS[i % len(TEXTS)])
    profiler.disable()
    report = io.StringIO()
    for key in ("tottime", "cumulative"):
        stats = pstats.Stats(profiler, stream=report)
        stats.strip_dirs().sort_stats(key).print_stats(top)
    if callers:
        stats = pstats.Stats(profiler, stream=report)
        stats.strip_dirs().sort_stats("cumulative").print_callers(*callers)
    text = report.getvalue()
    if out is not None:
        out.write_text(text)
        profiler.dump_stats(str(out.with_suffix(".pstats")))
    return text


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from luka_bot.core.loader import build_app
    from luka_bot.core.logging_setup import setup_logging

    redis = RedisProcess().start()
    primary = FakeLLMProcess("primary")
    fallback = FakeLLMProcess("fallback")
    if args.markdown_reply:
        from tests.model_answers import PATHLIB

        for provider in (primary, fallback):
            provider.control(reply=PATHLIB)
    telegram = FakeTelegramProcess()
    log_file = tempfile.NamedTemporaryFile("w", prefix="message-cost-", suffix=".log", delete=False)  # noqa: SIM115
    try:
        settings = build_settings(telegram.url, redis.url, primary, fallback, args.stream, args.context_window,
                                  args.quota)
        stream = args.stream if args.stream is not None else getattr(settings, "STREAMING", "off") in ("on", True)
        setup_logging(settings.LOG_LEVEL, [TOKEN, OPENAI_KEY])
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(log_file)  # the bot's log lines, formatted and written as in production
        app = build_app(settings)
        if "pin-responses" in args.emulate_fix:
            pin_telegram_responses(app.bot)
        if "reuse-agents" in args.emulate_fix:
            reuse_agents()
        arms = Arms(app, stream, args.history, args.history_chars)
        for i in range(args.warmup):  # imports, connection pools, caches, .mo files
            for arm in args.arms:
                await arms.prepare(arm)
                await getattr(arms, arm)(TEXTS[i % len(TEXTS)])
        gc.collect()
        gc.freeze()
        print(f"… measuring {args.messages} messages per arm", file=sys.stderr, flush=True)
        samples = await measure(arms, args.messages, args.arms)
        agents_cpu = []
        for _ in range(50):
            cpu = time.process_time()
            arms.build_agents()
            agents_cpu.append((time.process_time() - cpu) * 1000.0)
        samples["build_agents"] = {"cpu": agents_cpu}
        samples["limits_alone"] = {"cpu": [], "wall": []}
        for _ in range(args.messages):
            cpu, wall = await cpu_ms(arms.limits_alone)
            samples["limits_alone"]["cpu"].append(cpu)
            samples["limits_alone"]["wall"].append(wall)
        profile_text = None
        if args.profile:
            print(f"… profiling {args.profile} bot messages", file=sys.stderr, flush=True)
            if args.profiler == "pyinstrument":
                profile_text = await profile_pyinstrument(arms, args.profile, args.profile_out)
            else:
                profile_text = await profile(arms, args.profile, args.profile_out, args.top, args.callers)
        store_kinds = {"fallback": app.fallback.store.kind, "bot": getattr(app.bot_store, "kind", "?")}
        sent = [len(json.dumps(r.get("messages"), ensure_ascii=False)) for r in primary.state()["requests"]
                if r.get("tools")]  # the chat agent's requests (thread names have no tools)
        await app.dp.emit_shutdown()
        await app.bot.session.close()
    finally:
        telegram.stop()
        primary.stop()
        fallback.stop()
        redis.stop()
        log_file.close()
    log_lines = _count_lines(log_file.name)
    if args.log_out is not None:
        os.replace(log_file.name, args.log_out)
    else:
        os.unlink(log_file.name)
    return {"samples": samples, "stream": stream, "stores": store_kinds, "profile": profile_text,
            "chat_prompt_chars": (min(sent), max(sent)) if sent else None,
            "log_lines": log_lines, "settings_streaming": getattr(settings, "STREAMING", None)}


def _count_lines(path: str) -> int:
    with open(path, encoding="utf-8") as lines:
        return sum(1 for _ in lines)


def summarize(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    med = {arm: statistics.median(result["samples"][arm]["cpu"]) for arm in args.arms}
    wall = {arm: statistics.median(result["samples"][arm]["wall"]) for arm in args.arms}
    a = med["bare"]
    b = med["fallback"] - med["bare"]
    c = med["bot"] - med["fallback"]
    d = med["inbox"] - med["bot"] if "inbox" in med else None
    e = med["bot"] - med["unlimited"] if "unlimited" in med else None
    return {
        "messages_per_arm": args.messages,
        "streamed_chat_call": result["stream"],
        "bot_streaming_setting": result["settings_streaming"],
        "stores": result["stores"],
        "cpu_ms_median": {k: round(v, 3) for k, v in med.items()},
        "wall_ms_median": {k: round(v, 3) for k, v in wall.items()},
        "a_pydantic_ai_ms": round(a, 3),
        "b_failover_ms": round(b, 3),
        "c_everything_else_ms": round(c, 3),
        "b_over_a": round(b / a, 3),
        "c_over_a": round(c / a, 3),
        "b_plus_c_over_a": round((b + c) / a, 3),
        "goal_b_plus_c_le_half_a": (b + c) <= 0.5 * a,
        "d_inbox_ms": None if d is None else round(d, 3),
        "d_over_bot": None if d is None else round(d / med["bot"], 3),
        "goal_d_le_tenth_of_bot": None if d is None else d <= 0.1 * med["bot"],
        "e_limits_ms": None if e is None else round(e, 3),
        "e_over_bot": None if e is None else round(e / med["bot"], 3),
        "limits_alone_cpu_ms": round(statistics.median(result["samples"]["limits_alone"]["cpu"]), 3),
        "limits_alone_wall_ms": round(statistics.median(result["samples"]["limits_alone"]["wall"]), 3),
        "quota": args.quota,
        "arms": list(args.arms),
        "build_two_agents_cpu_ms": round(statistics.median(result["samples"]["build_agents"]["cpu"]), 3),
        "emulated_fixes": args.emulate_fix,
        "history_turns": args.history,
        "context_window": args.context_window,
        "chat_prompt_chars_min_max": result["chat_prompt_chars"],
        "log_lines_per_message": round(result["log_lines"] / (len(args.arms) * (args.warmup + args.messages)
                                                               + args.profile), 2),
        "samples_cpu_ms": {arm: [round(x, 3) for x in result["samples"][arm]["cpu"]] for arm in args.arms},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()},
    }


def print_report(s: dict[str, Any]) -> None:
    med, wall = s["cpu_ms_median"], s["wall_ms_median"]
    print(f"\n### Cost of one message ({s['messages_per_arm']} messages per arm, interleaved; chat call "
          f"{'streamed' if s['streamed_chat_call'] else 'not streamed'} in arms (a)/(b); the bot's STREAMING "
          f"setting: {s['bot_streaming_setting'] or 'none (this bot version does not stream)'}; stores: {s['stores']}; "
          f"load average {', '.join(f'{x:.1f}' for x in s['machine']['loadavg'])})\n")
    print("| arm | CPU ms / message (median) | wall ms (median) |")
    print("|---|---:|---:|")
    for arm, label in (("bot", "whole message through the bot"),
                       ("unlimited", "the same, without the per-user limits"),
                       ("inbox", "the same, recorded in the durable inbox first"),
                       ("fallback", "the two LLM calls via LLMFallbackModel"),
                       ("bare", "the two LLM calls on plain pydantic-ai")):
        if arm not in med:
            continue
        print(f"| {arm}: {label} | {fmt(med[arm], 2)} | {fmt(wall[arm], 1)} |")
    print()
    print("| part | CPU ms | × (a) |")
    print("|---|---:|---:|")
    print(f"| (a) pydantic-ai calls | {fmt(s['a_pydantic_ai_ms'], 2)} | 1.00 |")
    print(f"| (b) fallback layer | {fmt(s['b_failover_ms'], 2)} | {fmt(s['b_over_a'], 2)} |")
    print(f"| (c) everything else | {fmt(s['c_everything_else_ms'], 2)} | {fmt(s['c_over_a'], 2)} |")
    verdict = "met" if s["goal_b_plus_c_le_half_a"] else "NOT met"
    print(f"\n(b)+(c) = {s['b_plus_c_over_a']:.2f} × (a); goal ≤ 0.50 × (a): {verdict}. "
          f"Log lines per message (all arms): {s['log_lines_per_message']}. Of (c): building the chat and "
          f"name agents (the bot does per message) {s['build_two_agents_cpu_ms']:.2f} ms. "
          f"Emulated fixes: {', '.join(s['emulated_fixes']) or 'none'}.")
    if s["d_inbox_ms"] is None:
        return
    verdict = "met" if s["goal_d_le_tenth_of_bot"] else "NOT met"
    print(f"\n(d) the durable inbox (record + finish): {s['d_inbox_ms']:.2f} ms = {100 * s['d_over_bot']:.1f} % of the "
          f"bot's CPU per message; goal ≤ 10 %: {verdict}.")
    if s["history_turns"]:
        low, high = s["chat_prompt_chars_min_max"]
        print(f"Each message continued a thread of {s['history_turns']} turns; ollama's window: "
              f"{s['context_window'] or 'the default'}; the chat requests the primary received had {low}–{high} "
              "characters of messages (the bare arm always sends the whole thread).")
    quota = f"daily token quota {s['quota']}" if s["quota"] else "no quota"
    print(f"\n(e) the per-user limits (rate at its defaults, {quota}): {s['e_limits_ms']:.2f} ms = "
          f"{100 * s['e_over_bot']:.1f} % of the bot's CPU per message; measured alone (the same checks on the "
          f"same Redis, {s['messages_per_arm']} times): {s['limits_alone_cpu_ms']:.3f} ms CPU, "
          f"{s['limits_alone_wall_ms']:.3f} ms wall.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300, help="messages per arm")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                        help="the arms to interleave, in this rotation (bot, fallback and bare are needed); "
                             "without inbox: the three arms and rotation of the bot before the inbox")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured messages per arm first")
    parser.add_argument("--stream", dest="stream", action="store_true", default=None,
                        help="stream the chat call (default: the bot's STREAMING setting if it has one, else off)")
    parser.add_argument("--no-stream", dest="stream", action="store_false")
    parser.add_argument("--quota", type=int, default=0, metavar="TOKENS",
                        help="USER_DAILY_TOKENS for the bot (default 0: off), to measure the quota's cost too")
    parser.add_argument("--markdown-reply", action="store_true",
                        help="the providers answer a model-like Markdown answer (tests/model_answers.py)")
    parser.add_argument("--history", type=int, default=0, help="turns already in the thread of each message")
    parser.add_argument("--history-chars", type=int, default=1500, help="characters of each earlier user message")
    parser.add_argument("--context-window", type=int, default=None,
                        help="ollama's context window in tokens (LLM_CONTEXT_WINDOWS; unset: the bot's default)")
    parser.add_argument("--profile", type=int, default=0, help="then profile this many bot messages (cProfile)")
    parser.add_argument("--profile-out", type=Path, help="write the profile report here (+ .pstats)")
    parser.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile",
                        help="cprofile: CPU time, top entries; pyinstrument: sampled call tree (wall time)")
    parser.add_argument("--top", type=int, default=25, help="entries per profile listing")
    parser.add_argument("--callers", nargs="*", default=[], help="profile: also list the callers of these")
    parser.add_argument("--emulate-fix", nargs="*", default=[], choices=("pin-responses", "reuse-agents"),
                        help="emulate proposed fixes in the bot: keep aiogram's Response[T] models alive; "
                             "build the chat/name agents once (see pin_telegram_responses, reuse_agents)")
    parser.add_argument("--log-out", type=Path, help="keep the bot's log here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.messages < 5:
        parser.error("need --messages >= 5")
    args.arms = tuple(dict.fromkeys(args.arms))
    if not {"bot", "fallback", "bare"} <= set(args.arms):
        parser.error("--arms needs bot, fallback and bare")
    exit_on_sigterm()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    result = asyncio.run(run(args))
    summary = summarize(result, args)
    print_report(summary)
    if result["profile"] and args.profile_out is None:
        print("\n" + result["profile"])
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()

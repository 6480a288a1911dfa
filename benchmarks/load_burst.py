#!/usr/bin/env python
"""Load burst: N private users write to the real bot process at once; does every one get a real answer?

The bot runs as `python -m luka_bot` (long polling) against the fake Bot API
(`tests/fakes/fake_telegram.py`, served from this process), with a real redis-server and two fake
OpenAI-compatible providers (`tests/fakes/fake_llm.py`, each in its own process) answering in
`--latency` (20 ms). Primary = "ollama", fallback = "openai". Per scenario:

- ``ok``       both providers healthy;
- ``http500``  the primary answers every request with HTTP 500;
- ``hang``     the primary accepts and never answers (the bot's read timeout, `--timeout`, ends it).

Each scenario starts a fresh bot on an empty Redis, warms it up with one message (both providers
healthy), switches the primary's mode, then queues one message from each of N new users at once
(`--users`, default 500) and waits until every user got a real reply or an apology
(`--deadline`). Printed per scenario:

- answered      users whose reply is a provider's answer ("answer from ollama|openai");
- apologies     users who got "😔 I can't answer right now…";
- false cooldowns  healthy providers (both in ``ok``, the fallback otherwise) that got a cooldown
                record in Redis (sampled every 0.1 s) or a "🔴 … is down" admin alert;
- p50/p99       push-to-reply: from queueing the update to the bot's sendMessage with the answer;
- CPU ms/msg    the bot process's user+system CPU time (/proc/<pid>/stat) over the burst / N;
- tracebacks    "Traceback" lines in the bot's log;
- durable inbox  the most messages waiting in it, and the longest any of them went without its live
                 process refreshing it (sampled every 0.1 s): what `INBOX_ORPHAN_AFTER` must outlast.

    python benchmarks/load_burst.py                      # 500 users, ok / http500 / hang
    python benchmarks/load_burst.py --users 100 --scenario http500 --json burst.json
    python benchmarks/load_burst.py --env BOT_MAX_CONCURRENT_UPDATES=1000   # any bot setting
    python benchmarks/load_burst.py --flood              # Telegram's flood control: see _flood.py

Needs only the package and its `bench` extra (`pip install -e '.[bench]'`) and `redis-server` on
PATH; no pytest. Loopback only. The machine's other load shows in the figures: say so with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import redis
from _common import ROOT, FakeLLMProcess, fmt, percentile, rnd
from _flood import ARMS, flood_json, print_flood_table, run_arm

from luka_bot.core.config import Settings
from tests.fakes.bot_process import BotProcess, bot_env
from tests.fakes.fake_telegram import FakeTelegram

SCENARIOS = ("ok", "http500", "hang")
TOKEN = "123456:LOAD-burst-token-not-real"
OPENAI_KEY = "sk-bench-not-a-secret"
ADMIN = 5001
WARMUP_USER = 4001
FIRST_USER = 100_000
APOLOGY = "😔 I can't answer right now, try again in a minute."
REAL_REPLY = re.compile(r"^answer from (ollama|openai)$")
DOWN_ALERT = re.compile(r"^🔴 LLM provider (\S+) is down")
PROVIDERS = ("ollama", "openai")


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redis:
    """A throw-away redis-server on 127.0.0.1 (no persistence)."""

    def __init__(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise SystemExit("redis-server is not on PATH")
        self.port = free_port()
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--maxclients", "10000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cooling(self) -> set[str]:
        """Providers with a cooldown record (any key naming a cooldown and the provider)."""
        keys = list(self.client.scan_iter(match="*cooldown*", count=1000))
        return {p for p in PROVIDERS for key in keys if re.search(rf"(^|[:_]){p}($|[:_])", key)}

    def inbox(self) -> tuple[int, float]:
        """(messages waiting in the durable inbox, the longest any of them has gone unrefreshed, s)."""
        stream = f"luka:{TOKEN.partition(':')[0]}:inbox"
        if not self.client.exists(stream):
            return 0, 0.0
        pending = self.client.xpending_range(stream, "bots", "-", "+", 100_000)
        return len(pending), max((p["time_since_delivered"] for p in pending), default=0) / 1000

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (fields 14 and 15 of /proc/<pid>/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bot_settings(fake: FakeTelegram, primary: FakeLLMProcess, fallback: FakeLLMProcess, redis_url: str,
                 args: argparse.Namespace) -> dict[str, str]:
    env = bot_env(fake, primary, fallback, redis_url=redis_url, admin=ADMIN, openai_key=OPENAI_KEY,
                  OLLAMA_TIMEOUT=args.timeout, OPENAI_TIMEOUT=args.timeout, LOG_LEVEL="INFO", PYTHONPATH=ROOT,
                  USER_RATE_LIMIT=Settings.model_fields["USER_RATE_LIMIT"].default)  # one message per user: as shipped
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


# --- one scenario --------------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    users: int
    answered: int = 0
    apologies: int = 0
    unanswered: int = 0
    false_cooldowns: int = 0
    false_down_alerts: int = 0
    answered_by: dict[str, int] = field(default_factory=dict)
    p50_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None
    cpu_ms_per_msg: float | None = None
    tracebacks: int = 0
    burst_s: float | None = None
    inbox_max_pending: int = 0
    inbox_max_idle_s: float = 0.0
    """The longest a message in the durable inbox went without its (live) process refreshing it."""

    @property
    def goal_met(self) -> bool:
        return self.answered == self.users and self.apologies == 0 and self.false_cooldowns == 0


async def run_scenario(scenario: str, args: argparse.Namespace, store: Redis, primary: FakeLLMProcess,
                       fallback: FakeLLMProcess, workdir: Path) -> Result:
    store.client.flushall()
    primary.control(mode="ok", reset=True)
    fallback.control(mode="ok", reset=True)
    fake = await FakeTelegram(token=TOKEN).start()
    fake.add_chat(ADMIN, first_name="Admin")
    bot = await BotProcess.start(bot_settings(fake, primary, fallback, store.url, args), workdir,
                                 log_name=f"bot-{scenario}.log")
    process = bot.process
    try:
        await bot.wait_polling(fake, timeout=60)
        mark = fake.mark()
        fake.send_message("warm up", user_id=WARMUP_USER)
        await fake.wait_for("sendMessage", lambda c: c.params.get("chat_id") == WARMUP_USER
                            and bool(REAL_REPLY.match(c.params.get("text", ""))), timeout=30, after=mark)
        mid_burst = bool(args.fault_at) and scenario != "ok"
        primary.control(mode="ok" if mid_burst else scenario, reset=True)
        fallback.control(mode="ok", reset=True)
        healthy = set(PROVIDERS) if scenario == "ok" else {"openai"}
        result = Result(scenario, args.users)
        users = range(FIRST_USER, FIRST_USER + args.users)
        mark = fake.mark()
        cpu_before = cpu_seconds(process.pid)
        started = time.time()
        pushed: dict[int, float] = {}
        for user in users:  # all queued before the bot's next getUpdates: at once
            pushed[user] = time.time()
            fake.send_message(f"hello from {user}", user_id=user)
        outcome: dict[int, tuple[str, float]] = {}
        cooled: set[str] = set()
        seen = mark
        deadline = time.monotonic() + args.deadline
        while len(outcome) < args.users and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if mid_burst and len(outcome) >= args.fault_at * args.users:
                primary.control(mode=scenario)  # the fault lands while the burst is being answered
                mid_burst = False
            cooled |= store.cooling() & healthy
            waiting, idle = store.inbox()
            result.inbox_max_pending = max(result.inbox_max_pending, waiting)
            result.inbox_max_idle_s = max(result.inbox_max_idle_s, round(idle, 2))
            calls = fake.calls[seen:]
            seen += len(calls)
            for call in calls:
                chat = call.params.get("chat_id")
                if call.method != "sendMessage" or chat not in pushed or chat in outcome or not call.ok:
                    continue
                text = call.params.get("text", "")
                if match := REAL_REPLY.match(text):
                    outcome[chat] = (match.group(1), call.at)
                elif text == APOLOGY:
                    outcome[chat] = ("apology", call.at)
        result.burst_s = rnd(time.time() - started)
        cpu_after = cpu_seconds(process.pid)
        cooled |= store.cooling() & healthy
        latencies = [at - pushed[user] for user, (kind, at) in outcome.items() if kind != "apology"]
        result.answered = len(latencies)
        result.apologies = sum(1 for kind, _ in outcome.values() if kind == "apology")
        result.unanswered = args.users - len(outcome)
        for kind, _ in outcome.values():
            if kind != "apology":
                result.answered_by[kind] = result.answered_by.get(kind, 0) + 1
        alerts = [DOWN_ALERT.match(t) for t in (c.params.get("text", "") for c in fake.calls_of("sendMessage")
                                                if c.params.get("chat_id") == ADMIN)]
        result.false_down_alerts = sum(1 for a in alerts if a and a.group(1) in healthy)
        cooled |= {a.group(1) for a in alerts if a and a.group(1) in healthy}
        result.false_cooldowns = len(cooled)
        result.p50_s = rnd(percentile(latencies, 50))
        result.p99_s = rnd(percentile(latencies, 99))
        result.max_s = rnd(max(latencies)) if latencies else None
        result.cpu_ms_per_msg = rnd((cpu_after - cpu_before) * 1000 / args.users, 1)
    finally:
        await bot.stop(grace=20)
        await fake.stop()
    result.tracebacks = bot.log().count("Traceback")
    return result


def print_table(results: list[Result]) -> None:
    header = (f"{'scenario':<9} {'answered':>9} {'apologies':>9} {'unanswered':>10} {'false cd':>8} "
              f"{'p50 s':>7} {'p99 s':>7} {'CPU ms/msg':>10} {'tracebacks':>10}  by provider")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.scenario:<9} {r.answered:>4}/{r.users:<4} {r.apologies:>9} {r.unanswered:>10} "
              f"{r.false_cooldowns:>8} {fmt(r.p50_s):>7} {fmt(r.p99_s):>7} {fmt(r.cpu_ms_per_msg, 1):>10} "
              f"{r.tracebacks:>10}  {r.answered_by}")
    for r in results:
        print(f"{r.scenario}: durable inbox at most {r.inbox_max_pending} waiting; the longest a waiting message "
              f"went unrefreshed: {r.inbox_max_idle_s:.2f} s")
    met = all(r.goal_met for r in results)
    print(f"\ngoal (all answered, 0 apologies, 0 false cooldowns): {'met' if met else 'NOT met'}")


async def run_each(args: argparse.Namespace, names: list[str], run_one: Any, label: str = "") -> list[Any]:
    """`run_one(name, args, store, primary, fallback, workdir)` for each name, on one redis-server and one pair
    of fake providers (stopped at the end)."""
    store = Redis()
    primary = FakeLLMProcess("ollama", latency=args.latency)
    fallback = FakeLLMProcess("openai", latency=args.latency)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="load_burst_") as tmp:
            workdir = Path(args.keep_logs) if args.keep_logs else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            for name in names:
                print(f"… {label}{name}: {args.users} users", file=sys.stderr, flush=True)
                results.append(await run_one(name, args, store, primary, fallback, workdir))
    finally:
        primary.stop()
        fallback.stop()
        store.stop()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500, help="users writing at once (default 500)")
    parser.add_argument("--scenario", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--fault-at", type=float, default=0.0, metavar="FRACTION",
                        help="inject the scenario's fault mid-burst, once this share of users has an answer "
                             "(e.g. 0.3); default: the primary fails from the start")
    parser.add_argument("--latency", type=float, default=0.02, help="providers' answer time, s (default 0.02)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="OLLAMA_TIMEOUT/OPENAI_TIMEOUT of the bot, s (default 10)")
    parser.add_argument("--deadline", type=float, default=180.0, help="max seconds to wait for all replies")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra bot setting (repeatable), e.g. BOT_MAX_CONCURRENT_UPDATES=64")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' = stdout)")
    parser.add_argument("--keep-logs", metavar="DIR", help="keep the bot logs in DIR")
    parser.add_argument("--flood", action="store_true",
                        help="Telegram-like flood control on the fake Bot API: this bot (polling, 2 webhook "
                             "replicas) against a minimal aiogram + aiolimiter bot (benchmarks/_flood.py)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="--flood: the arms to run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the bot, fakes and Redis are stopped
    if args.flood:
        flooded = asyncio.run(run_each(args, args.arms, run_arm, "flood "))
        met = print_flood_table(flooded)
        if args.json:
            Path(args.json).write_text(json.dumps({"users": args.users, "latency": args.latency, "env": args.env,
                                                   "arms": flood_json(flooded)}, indent=2, ensure_ascii=False))
        return 0 if met else 1
    results = asyncio.run(run_each(args, args.scenario, run_scenario))
    print_table(results)
    if args.json:
        payload = {"users": args.users, "latency": args.latency, "timeout": args.timeout, "env": args.env,
                   "results": [{**asdict(r), "goal_met": r.goal_met} for r in results]}
        text = json.dumps(payload, indent=2, ensure_ascii=False)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0 if all(r.goal_met for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

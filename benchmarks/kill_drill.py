#!/usr/bin/env python
"""Kill drill: SIGKILL the real bot with replies in flight; is every message answered, once?

The bot runs as `python -m luka_bot` against the fake Bot API (served from this process), a real
redis-server and one fake provider (`tests/fakes/fake_llm.py`, its own process) that answers in
`--latency` seconds (4 s: a slow local model). Its settings are the defaults (the orphan bound
`INBOX_ORPHAN_AFTER` included) unless `--env` says otherwise. Drills:

- ``polling``: `--users` users write, `--spread` s apart; once a third of them got their answer
  (the others' replies are in flight, some answers are being sent right now) the bot is SIGKILLed
  and started again at once;
- ``replicas``: two webhook replicas; the users' updates go to replica 0, which is SIGKILLed at the
  same point; replica 1 keeps running and is not restarted;
- ``window``: `--samples` messages one after another (provider at 20 ms); for each, the time from
  the fake Bot API receiving the answer to the message leaving the inbox in Redis — a process
  killed inside that window answers the message again after the restart.

Printed: answered (in all), answered before the kill, in flight at the kill (written, not yet
answered), seconds from the kill to the answers that came after it (p50, max),
duplicates (users answered twice), the window (p50, max).

    python benchmarks/kill_drill.py                          # all drills, 10 users, 4 s replies
    python benchmarks/kill_drill.py --drill replicas --env INBOX_ORPHAN_AFTER=10 --json drill.json

Needs the package, `redis-server` on PATH, loopback only; no pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import redis
from _common import ROOT, FakeLLMProcess, RedisProcess, exit_on_sigterm, fmt, rnd

from tests.fakes.bot_process import BotProcess, bot_env
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.redis_server import free_port

TOKEN = "123456:KILL-drill-token-not-real"
SECRET = "kill-drill-secret-0123456789"
STREAM = "luka:123456:inbox"
ANSWER = "answer from ollama"
FIRST_USER = 50_000
DRILLS = ("polling", "replicas", "window")


@dataclass
class Drill:
    drill: str
    users: int
    in_flight_at_kill: int = 0
    answered_before_kill: int = 0
    answered: int = 0
    duplicates: int = 0
    p50_s_after_kill: float | None = None
    max_s_after_kill: float | None = None
    window_p50_ms: float | None = None
    window_max_ms: float | None = None
    tracebacks: int = 0


class Rig:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.redis = RedisProcess().start()
        self.store = redis.Redis.from_url(self.redis.url, decode_responses=True)
        self.llm = FakeLLMProcess("ollama", latency=args.latency)
        self.fake = FakeTelegram(token=TOKEN)
        self.bots: list[BotProcess] = []

    def env(self, **settings: object) -> dict[str, str]:
        env = bot_env(self.fake, self.llm, redis_url=self.redis.url, OLLAMA_TIMEOUT=120, LOG_LEVEL="INFO",
                      PYTHONPATH=ROOT, **settings)
        env.update(item.split("=", 1) for item in self.args.env)  # type: ignore[arg-type]
        return env

    async def start(self, **settings: object) -> BotProcess:
        bot = await BotProcess.start(self.env(**settings), self.workdir, log_name=f"bot{len(self.bots)}.log")
        self.bots.append(bot)
        return bot

    def answers(self, user: int) -> list[Call]:
        return [c for c in self.fake.calls_of("sendMessage")
                if c.ok and c.params.get("chat_id") == user and c.params.get("text") == ANSWER]

    async def until(self, done: object, deadline: float) -> bool:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if done():  # type: ignore[operator]
                return True
            await asyncio.sleep(0.05)
        return False

    def close(self) -> None:
        self.store.close()
        self.llm.stop()
        self.redis.stop()


async def kill_mid_reply(rig: Rig, drill: str) -> Drill:
    """Users write, spread out; at a third answered the bot (replica 0) is killed; the rest must come."""
    args = rig.args
    first = FIRST_USER + 10_000 * DRILLS.index(drill)
    users = list(range(first, first + args.users))
    rig.store.flushall()
    await rig.fake.start()
    result = Drill(drill, args.users)
    http = aiohttp.ClientSession()
    try:
        if drill == "polling":
            victim = await rig.start()
            await victim.wait_polling(rig.fake, timeout=60)
        else:
            ports = [free_port(), free_port()]
            victim, survivor = [await rig.start(WEBHOOK_URL=f"http://127.0.0.1:{p}", WEBHOOK_HOST="127.0.0.1",
                                                WEBHOOK_PORT=p, WEBHOOK_SECRET=SECRET) for p in ports]
            for port, bot in zip(ports, (victim, survivor), strict=True):
                await bot.wait_listening(f"http://127.0.0.1:{port}/webhook", timeout=120)
        for index, user in enumerate(users):
            message = rig.fake.send_message(f"question of {user}", user_id=user)
            if drill == "replicas":
                update = {"update_id": index + 1, "message": message}
                async with http.post(f"http://127.0.0.1:{ports[0]}/webhook", json=update,
                                     headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as response:
                    assert response.status == 200
            await asyncio.sleep(args.spread)
        await rig.until(lambda: sum(1 for u in users if rig.answers(u)) >= max(1, args.users // 3), 120)
        await victim.stop()  # SIGKILL
        killed_at = time.time()
        result.answered_before_kill = sum(1 for u in users if rig.answers(u))
        result.in_flight_at_kill = args.users - result.answered_before_kill
        if drill == "polling":
            await (await rig.start()).wait_polling(rig.fake, timeout=60)
        await rig.until(lambda: all(rig.answers(u) for u in users), args.deadline)
        after = [rig.answers(u)[0].at - killed_at for u in users if rig.answers(u) and rig.answers(u)[0].at > killed_at]
        result.answered = sum(1 for u in users if rig.answers(u))
        await asyncio.sleep(args.settle)  # a second answer, if any, would come now
        result.duplicates = sum(1 for u in users if len(rig.answers(u)) > 1)
        result.p50_s_after_kill = rnd(statistics.median(after)) if after else None
        result.max_s_after_kill = rnd(max(after)) if after else None
    finally:
        await http.close()
        for bot in rig.bots:
            await bot.stop(grace=15)
        await rig.fake.stop()
    result.tracebacks = sum(bot.log().count("Traceback") for bot in rig.bots)
    rig.bots.clear()
    return result


async def window(rig: Rig) -> Drill:
    """One message at a time: from the fake receiving the answer to the entry leaving Redis."""
    args = rig.args
    rig.store.flushall()
    rig.llm.control(latency=0.02)
    await rig.fake.start()
    result = Drill("window", args.samples)
    windows = []
    try:
        bot = await rig.start()
        await bot.wait_polling(rig.fake, timeout=60)
        for index in range(args.samples):
            user = FIRST_USER + 10_000 * DRILLS.index("window") + index
            rig.fake.send_message("quick", user_id=user)
            end = time.monotonic() + 30
            while not rig.answers(user) and time.monotonic() < end:  # (the fake Bot API runs in this loop)
                await asyncio.sleep(0.0005)
            sent = rig.answers(user)[0].at
            while rig.store.xlen(STREAM):
                await asyncio.sleep(0.0002)
            windows.append((time.time() - sent) * 1000)
        result.answered = len(windows)
        result.window_p50_ms = rnd(statistics.median(windows), 2)
        result.window_max_ms = rnd(max(windows), 2)
    finally:
        for bot in rig.bots:
            await bot.stop(grace=15)
        await rig.fake.stop()
        rig.llm.control(latency=args.latency)
    result.tracebacks = sum(bot.log().count("Traceback") for bot in rig.bots)
    rig.bots.clear()
    return result


def print_table(results: list[Drill]) -> None:
    print(f"{'drill':<9} {'answered':>9} {'before kill':>11} {'in flight':>9} {'s after kill p50/max':>21} "
          f"{'duplicates':>10} {'window ms p50/max':>18} {'tracebacks':>10}")
    for r in results:
        after = f"{fmt(r.p50_s_after_kill, 1)} / {fmt(r.max_s_after_kill, 1)}"
        spread = f"{fmt(r.window_p50_ms)} / {fmt(r.window_max_ms)}" if r.window_p50_ms is not None else "-"
        print(f"{r.drill:<9} {r.answered:>4}/{r.users:<4} {r.answered_before_kill:>11} {r.in_flight_at_kill:>9} "
              f"{after:>21} {r.duplicates:>10} {spread:>18} {r.tracebacks:>10}")


async def main_async(args: argparse.Namespace) -> list[Drill]:
    with tempfile.TemporaryDirectory(prefix="kill_drill_") as tmp:
        rig = Rig(args, Path(args.keep_logs or tmp))
        rig.workdir.mkdir(parents=True, exist_ok=True)
        try:
            results = []
            for drill in args.drill:
                print(f"… {drill}", file=sys.stderr, flush=True)
                results.append(await (window(rig) if drill == "window" else kill_mid_reply(rig, drill)))
            return results
        finally:
            rig.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drill", nargs="+", choices=DRILLS, default=list(DRILLS))
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--spread", type=float, default=0.3, help="seconds between two users' messages")
    parser.add_argument("--latency", type=float, default=4.0, help="the provider's answer time, s")
    parser.add_argument("--samples", type=int, default=30, help="messages of the window drill")
    parser.add_argument("--deadline", type=float, default=120.0, help="max seconds to wait for every answer")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to watch for second answers")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra bot setting")
    parser.add_argument("--keep-logs", metavar="DIR")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    results = asyncio.run(main_async(args))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    ok = all(r.answered == r.users and r.duplicates == 0 and not r.tracebacks for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""`load_burst.py --flood`: N users at once against a Bot API with Telegram-like flood control.

The fake Bot API (`tests/fakes/fake_telegram.py`) gets `tests/fakes/flood_control.py`: token
buckets of 30/s overall (burst 30), 1/s per chat (burst 3), 20/min per group; 429 with
`retry_after` beyond. Three arms, one after the other in one run, each on a fresh fake, Redis
emptied, providers at `--latency`:

- ``polling``   this bot, one process, long polling;
- ``replicas``  this bot, two webhook processes on one Redis, updates posted alternately (at most
                40 at once, like Telegram); both on this host, so each has half the default update and
                LLM bounds (`REPLICA_BOUNDS`: 64 per host, as the polling arm);
- ``anchor``    `benchmarks/anchor_bot.py`: minimal aiogram + aiolimiter session middleware, 50 ms of
                work, then the same two sends per user (a title and an answer).

Each arm is warmed up by one user (flood control off), then N new users write at once. Printed
per arm: answers delivered, message calls (sends that took a token, and 429s), the 429 share
of all message calls, time from the burst to the last answer, and the floor: (sends − 30) ÷ 30
per s, the time Telegram's overall bucket needs for what the arm sent.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from _common import ROOT, FakeLLMProcess, fmt, rnd

from tests.fakes.bot_process import BotProcess, bot_env
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.flood_control import FloodControl
from tests.fakes.redis_server import free_port

ARMS = ("polling", "replicas", "anchor")
TOKEN = "123456:FLOOD-burst-token-not-real"
SECRET = "flood-burst-secret"
WARMUP_USER = 4001
FIRST_USER = 200_000
OVERALL_RATE = 30
WEBHOOK_CONNECTIONS = 40
REPLICA_BOUNDS = {"BOT_MAX_CONCURRENT_UPDATES": "32", "LLM_MAX_CONCURRENT_REQUESTS": "32"}
"""Both replicas share this host's cores: each gets half of the default bounds (64 per host, as polling)."""


@dataclass
class FloodResult:
    arm: str
    users: int
    delivered: int = 0
    sends: int = 0
    """Message calls that went through (took a token)."""
    refused: int = 0
    """Message calls answered 429."""
    frames: int = 0
    """Of the sends: draft frames and edits."""
    last_answer_s: float | None = None
    typing: int = 0
    """sendChatAction calls in the burst (not paced: through the budget they would cost typing ÷ 30 s)."""
    tracebacks: int = 0
    errors: int = 0
    refused_by_method: dict[str, int] | None = None

    @property
    def share_429(self) -> float:
        return self.refused / max(1, self.sends + self.refused)

    @property
    def floor_s(self) -> float:
        return max(0.0, (self.sends - OVERALL_RATE) / OVERALL_RATE)


def is_answer(arm: str, text: str) -> bool:
    return text == "answer" if arm == "anchor" else text.startswith("answer from ")


class Arm:
    """One arm's processes: start, warm up, deliver the burst, stop."""

    def __init__(self, arm: str, fake: FakeTelegram, args: argparse.Namespace, redis_url: str,
                 primary: FakeLLMProcess, fallback: FakeLLMProcess, workdir: Path):
        self.arm, self.fake, self.args = arm, fake, args
        self.bots: list[BotProcess] = []
        self.ports: list[int] = []
        self.update_ids = itertools.count(1)
        self.env = bot_env(fake, primary, fallback, redis_url=redis_url, OLLAMA_TIMEOUT=args.timeout,
                           OPENAI_TIMEOUT=args.timeout, LOG_LEVEL="INFO", PYTHONPATH=ROOT)
        self.env.update(item.partition("=")[::2] for item in args.env)
        self.workdir = workdir

    async def start(self) -> None:
        if self.arm == "anchor":
            argv = (str(ROOT / "benchmarks" / "anchor_bot.py"), self.fake.url, TOKEN)
            self.bots.append(await BotProcess.start(self.env, self.workdir, log_name="anchor.log", argv=argv))
        elif self.arm == "polling":
            self.bots.append(await BotProcess.start(self.env, self.workdir, log_name="polling.log"))
        else:
            for replica in range(2):
                port = free_port()
                env = {**REPLICA_BOUNDS, **self.env, "WEBHOOK_URL": f"http://127.0.0.1:{port}", "WEBHOOK_HOST": "127.0.0.1",
                       "WEBHOOK_PORT": str(port), "WEBHOOK_SECRET": SECRET}
                self.ports.append(port)
                self.bots.append(await BotProcess.start(env, self.workdir, log_name=f"replica{replica}.log"))
        if self.ports:
            for port, bot in zip(self.ports, self.bots, strict=True):
                await bot.wait_listening(f"http://127.0.0.1:{port}/webhook", timeout=120)
        else:
            await self.bots[0].wait_polling(self.fake, timeout=60)

    async def write(self, http: aiohttp.ClientSession, users: range, text: str) -> None:
        """Every user in `users` writes `text` at once (webhooks: alternately to each replica)."""
        messages = [self.fake.send_message(f"{text} {user}", user_id=user) for user in users]
        if not self.ports:
            return  # long polling: they are queued for the next getUpdates

        async def post(turn: int, message: dict[str, Any]) -> None:
            url = f"http://127.0.0.1:{self.ports[turn % 2]}/webhook"
            update = {"update_id": next(self.update_ids), "message": message}
            async with http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as r:
                r.raise_for_status()

        await asyncio.gather(*(post(turn, m) for turn, m in enumerate(messages)))

    async def stop(self) -> None:
        await asyncio.gather(*(bot.stop(grace=20) for bot in self.bots))

    def logs(self) -> str:
        return "\n".join(bot.log() for bot in self.bots)


async def run_arm(arm_name: str, args: argparse.Namespace, redis: Any, primary: FakeLLMProcess,
                  fallback: FakeLLMProcess, workdir: Path) -> FloodResult:
    redis.client.flushall()
    primary.control(mode="ok", reset=True)
    fallback.control(mode="ok", reset=True)
    fake = await FakeTelegram(token=TOKEN).start()
    arm = Arm(arm_name, fake, args, redis.url, primary, fallback, workdir)
    result = FloodResult(arm_name, args.users)
    try:
        # Telegram posts at most 40 updates at once to a webhook (setWebhook's max_connections default)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=WEBHOOK_CONNECTIONS)) as http:
            await arm.start()
            mark = fake.mark()
            await arm.write(http, range(WARMUP_USER, WARMUP_USER + 1), "warm up")
            await fake.wait_for("sendMessage", lambda c: c.ok and is_answer(arm_name, c.params.get("text", "")),
                                timeout=60, after=mark)
            flood = fake.flood_control = FloodControl()
            users = range(FIRST_USER, FIRST_USER + args.users)
            mark = fake.mark()
            started = time.time()
            await arm.write(http, users, "hello from")
            answered: dict[int, float] = {}
            deadline = time.monotonic() + args.deadline
            seen = mark
            while len(answered) < args.users and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                calls, seen = fake.calls[seen:], len(fake.calls)
                for call in calls:
                    chat = call.params.get("chat_id")
                    if call.method == "sendMessage" and call.ok and chat in users and chat not in answered \
                            and is_answer(arm_name, call.params.get("text", "")):
                        answered[chat] = call.at
            result.delivered = len(answered)
            result.last_answer_s = rnd(max(answered.values()) - started) if answered else None
            result.sends, result.refused = flood.total_accepted, flood.total_refused
            result.refused_by_method = dict(flood.refused)
            result.typing = len([c for c in fake.calls[mark:] if c.method == "sendChatAction"])
            result.frames = sum(n for method, n in flood.accepted.items() if method != "sendMessage")
    finally:
        await arm.stop()
        await fake.stop()
    logs = arm.logs()
    result.tracebacks = logs.count("Traceback")
    result.errors = logs.count(" ERROR ")
    return result


def print_flood_table(results: list[FloodResult]) -> bool:
    """The table; whether the goal is met (all delivered, ≤ 1 % 429s, last answer ≤ 1.1 × the anchor's)."""
    anchor = next((r for r in results if r.arm == "anchor"), None)
    print("| arm | answers delivered | sends (frames) | 429s | 429 share | last answer | floor | vs anchor | "
          "tracebacks |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    met = True
    for r in results:
        ratio = (r.last_answer_s / anchor.last_answer_s if anchor and anchor.last_answer_s and r.last_answer_s
                 else None)
        print(f"| {r.arm} | {r.delivered} / {r.users} | {r.sends} ({r.frames}) | {r.refused} | "
              f"{r.share_429 * 100:.2f} % | {fmt(r.last_answer_s, 1, ' s')} | {r.floor_s:.1f} s | "
              f"{fmt(ratio, 2, '×')} | {r.tracebacks} |")
        if r.arm != "anchor":
            met &= r.delivered == r.users and r.share_429 <= 0.01 and (ratio is None or ratio <= 1.1)
    for r in results:
        print(f"- {r.arm}: 429s by method {r.refused_by_method or {}}; sendChatAction calls (not paced) "
              f"{r.typing}; ERROR lines {r.errors}")
    print(f"\ngoal (every answer delivered, 429s ≤ 1 %, last answer ≤ 1.1 × anchor): {'met' if met else 'NOT met'}")
    return met


def flood_json(results: list[FloodResult]) -> list[dict[str, Any]]:
    return [{**asdict(r), "share_429": r.share_429, "floor_s": r.floor_s} for r in results]

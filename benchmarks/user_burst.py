#!/usr/bin/env python
"""One user's burst against the paid fallback: what 100 messages at once cost, with and without per-user limits.

The real bot (`python -m luka_bot`, long polling the fake Bot API served from this process) with a
real redis-server, the free primary down (HTTP 500 from the start) and the paid fallback (fake
"openai", `--latency`) answering. Per arm, a fresh bot on an empty Redis: one user sends
`--messages` (100) at once, then `--others` (5) other users write one message each. Printed per arm:

- paid completions the burst cost: the fallback's requests that carry the burst user's text
  (answers and thread names);
- what the burst user got: answers, limit notices;
- others' wait: from queueing to the slowest other user's answer;
- all handled: from queueing to every update handled (aiogram's "Update id=… is handled" log lines).

Arms, side by side in one run: `off` (`USER_RATE_LIMIT=0`: no per-user limit, as before the limits
existed) and `defaults` (the settings' defaults). `--before-src DIR` adds `before`: the bot from
another source tree, e.g. `git archive main | tar -x -C DIR`.

    python benchmarks/user_burst.py [--messages 100] [--others 5] [--before-src /tmp/main-src] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, FakeLLMProcess, RedisProcess, exit_on_sigterm, fmt

from luka_bot.core.config import Settings
from tests.fakes.bot_process import BotProcess, bot_env
from tests.fakes.fake_telegram import FakeTelegram

TOKEN = "123456:USER-burst-token-not-real"
ADMIN = 5001
SPAMMER = 9001
FIRST_OTHER = 9101
HANDLED = re.compile(r"Update id=\d+ is (?:not )?handled")
DEFAULT_RATE_LIMIT = Settings.model_fields["USER_RATE_LIMIT"].default


@dataclass
class Arm:
    name: str
    paid: int = 0
    paid_answers: int = 0
    paid_names: int = 0
    answers: int = 0
    notices: int = 0
    others_answered: int = 0
    others_wait_s: float | None = None
    all_handled_s: float | None = None


def fallback_requests(fallback: FakeLLMProcess) -> list[dict[str, Any]]:
    with urllib.request.urlopen(fallback.url + "/__control", timeout=5) as response:
        return list(json.loads(response.read())["requests"])


def handled(bot: BotProcess) -> int:
    """Updates the bot has handled (aiogram logs each one, handled or not, at INFO)."""
    return len(HANDLED.findall(bot.log()))


async def run_arm(name: str, settings: dict[str, Any], args: argparse.Namespace, redis: RedisProcess,
                  primary: FakeLLMProcess, fallback: FakeLLMProcess, workdir: Path) -> Arm:
    import redis as redis_py

    with redis_py.Redis.from_url(redis.url) as client:
        client.flushall()
    primary.control(mode="http500", reset=True)
    fallback.control(mode="ok", reset=True)
    fake = await FakeTelegram(token=TOKEN).start()
    fake.add_chat(ADMIN, first_name="Admin")
    env = bot_env(fake, primary, fallback, redis_url=redis.url, admin=ADMIN, openai_key="sk-bench-not-a-secret",
                  LOG_LEVEL="INFO", **settings)
    bot = await BotProcess.start(env, workdir, log_name=f"bot-{name}.log")
    arm = Arm(name)
    others = list(range(FIRST_OTHER, FIRST_OTHER + args.others))
    try:
        await bot.wait_polling(fake, timeout=60)
        mark = fake.mark()
        started = time.time()
        for i in range(args.messages):
            fake.send_message(f"burst {i}", user_id=SPAMMER)
        for user in others:
            fake.send_message(f"hello from {user}", user_id=user)
        target = args.messages + args.others
        deadline = time.monotonic() + args.deadline
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            answered = {c.params["chat_id"]: c.at for c in fake.calls[mark:] if c.method == "sendMessage" and c.ok
                        and c.params.get("chat_id") in others and c.params.get("text", "").startswith("answer from")}
            if arm.others_wait_s is None and len(answered) == len(others):
                arm.others_wait_s = round(max(answered.values()) - started, 2)
            if handled(bot) >= target:
                arm.all_handled_s = round(time.time() - started, 2)
                break
        arm.others_answered = len({c.params["chat_id"] for c in fake.calls[mark:] if c.method == "sendMessage"
                                   and c.ok and c.params.get("chat_id") in others})
        sent = [c.params.get("text", "") for c in fake.calls[mark:]
                if c.method == "sendMessage" and c.ok and c.params.get("chat_id") == SPAMMER]
        arm.answers = sum(t.startswith("answer from") for t in sent)
        arm.notices = sum(t.startswith(("⏳", "📊")) for t in sent)
        paid = [r for r in fallback_requests(fallback) if "burst " in json.dumps(r.get("messages", []))]
        arm.paid = len(paid)
        arm.paid_names = sum("You name conversation threads" in json.dumps(r["messages"]) for r in paid)
        arm.paid_answers = arm.paid - arm.paid_names
    finally:
        await bot.stop(grace=20)
        await fake.stop()
    return arm


def print_table(arms: list[Arm], args: argparse.Namespace) -> None:
    print(f"\n### {args.messages} messages from one user at once, {args.others} other users; primary down "
          f"(HTTP 500), paid fallback at {args.latency * 1000:.0f} ms\n")
    print("| arm | paid completions (answers + names) | burst user got: answers, notices | others answered "
          "| slowest other answer, s | all handled, s |")
    print("|---|---:|---:|---:|---:|---:|")
    for a in arms:
        print(f"| {a.name} | {a.paid} ({a.paid_answers} + {a.paid_names}) | {a.answers}, {a.notices} | "
              f"{a.others_answered}/{args.others} | {fmt(a.others_wait_s)} | {fmt(a.all_handled_s)} |")


async def main_async(args: argparse.Namespace) -> list[Arm]:
    arms: list[tuple[str, dict[str, Any]]] = []
    if args.before_src:
        arms.append(("before", {"PYTHONPATH": str(Path(args.before_src).resolve())}))
    arms += [("off", {"USER_RATE_LIMIT": 0, "PYTHONPATH": ROOT}),
             ("defaults", {"USER_RATE_LIMIT": DEFAULT_RATE_LIMIT, "PYTHONPATH": ROOT})]
    redis = RedisProcess().start()
    primary = FakeLLMProcess("ollama", latency=args.latency)
    fallback = FakeLLMProcess("openai", latency=args.latency)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="user_burst_") as tmp:
            for name, settings in arms:
                print(f"… {name}", file=sys.stderr, flush=True)
                results.append(await run_arm(name, settings, args, redis, primary, fallback, Path(tmp)))
    finally:
        primary.stop()
        fallback.stop()
        redis.stop()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100, help="messages the one user sends at once")
    parser.add_argument("--others", type=int, default=5, help="other users writing right after")
    parser.add_argument("--latency", type=float, default=0.05, help="the fallback's answer time, s")
    parser.add_argument("--deadline", type=float, default=300.0, help="max seconds per arm")
    parser.add_argument("--before-src", help="also run the bot from this source tree (arm 'before')")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    arms = asyncio.run(main_async(args))
    print_table(arms, args)
    if args.json:
        args.json.write_text(json.dumps([asdict(a) for a in arms], indent=2) + "\n")


if __name__ == "__main__":
    main()

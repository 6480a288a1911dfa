"""The real bot (`python -m luka_bot`) as a subprocess against the fakes on 127.0.0.1.

Shared by the end-to-end tests and `benchmarks/load_burst.py`, so it needs no pytest:

- `bot_env(...)`: the bot's environment (this process's, minus every Settings field, plus the fakes);
- `BotProcess`: start it with a log file, wait for long polling / the webhook server, read the log, stop it;
- `empty_redis(...)` / `stop_all(...)`: a module's redis-server emptied first, its fakes stopped last;
- `says(...)` / `texts(...)`: the bot's successful sendMessage calls to one chat, as the user sees them;
- `scrape_metrics(url)`: a bot's `/metrics`, one value per sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from luka_bot.core.config import Settings
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.redis_server import RedisServer

LOG_TAIL = 4000


class _Server(Protocol):
    async def stop(self) -> None: ...


class _Provider(Protocol):
    url: str
    v1_url: str


def bot_env(fake: FakeTelegram, primary: _Provider | None = None, fallback: _Provider | None = None, *,
            redis_url: str | None = None, admin: int | None = None, openai_key: str | None = None,
            **settings: Any) -> dict[str, str]:
    """The bot's environment: no Settings field leaks in from this process; `primary` is "ollama" (model
    m1), `fallback` is "openai" (model g1, key `openai_key`); `settings` are any further bot settings.

    Readiness checks of the standby are off unless a test sets `LLM_STANDBY_CHECK_INTERVAL`: a check
    30 s after start-up would add a request (and maybe an alert) to whatever a test is counting.
    Scripted users write faster than people do, so the per-user rate limit is off unless `settings`
    set `USER_RATE_LIMIT` (tests/test_e2e_user_limits.py and tests/test_replicas.py do)."""
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    settings.setdefault("USER_RATE_LIMIT", 0)
    env.update(BOT_TOKEN=fake.token, TELEGRAM_API_URL=fake.url, PYTHONUNBUFFERED="1", LLM_STANDBY_CHECK_INTERVAL="0")
    if admin is not None:
        env["ADMIN_IDS"] = str(admin)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    providers: dict[str, list[str]] = {}
    if primary is not None:
        env["OLLAMA_URL"] = primary.url
        providers["ollama"] = ["m1"]
    if fallback is not None:
        env["OPENAI_BASE_URL"] = fallback.v1_url
        providers["openai"] = ["g1"]
    if openai_key is not None:
        env["OPENAI_API_KEY"] = openai_key
    env["AVAILABLE_PROVIDERS"] = json.dumps(providers)
    env.update({key: str(value) for key, value in settings.items()})
    return env


def empty_redis(server: RedisServer) -> str:
    """`server` running and emptied, so a bot starts from no state; its URL."""
    if not server.running:
        server.restart()
    server.flushall()
    return server.url


async def stop_all(*servers: _Server) -> None:
    """Stop the fakes, in order."""
    for server in servers:
        await server.stop()


@dataclass
class BotProcess:
    """One running bot process whose stdout and stderr go to `log_path`."""

    process: asyncio.subprocess.Process
    log_path: Path

    @classmethod
    async def start(cls, env: dict[str, str], workdir: Path, *, log_name: str = "bot.log",
                    argv: Sequence[str] = ("-m", "luka_bot")) -> BotProcess:
        log_path = workdir / log_name
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, *argv, cwd=workdir, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
        return cls(process, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = LOG_TAIL) -> str:
        return self.log()[-chars:]

    def report(self) -> str:
        """The log's tail under a header, for an assertion message."""
        return f"--- bot log (tail) ---\n{self.log_tail()}"

    async def wait_polling(self, fake: FakeTelegram, timeout: float = 30) -> None:
        try:
            await fake.wait_polling(timeout=timeout)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{self.report()}") from None

    async def wait_listening(self, url: str, *, timeout: float = 60, name: str = "the bot") -> None:
        """Until the webhook server at `url` answers (404/405 to a GET: the route only takes POST)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError(f"{name} exited:\n{self.log_tail(3000)}")
                try:
                    async with http.get(url) as response:
                        if response.status in (404, 405):
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"{name} did not come up at {url}:\n{self.log_tail(3000)}")

    async def stop(self, *, grace: float | None = None) -> None:
        """Kill it; with `grace`, SIGTERM first and kill only if it has not exited within `grace` s."""
        if self.process.returncode is not None:
            return
        if grace is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=grace)
                return
            except TimeoutError:
                pass
        self.process.kill()
        await self.process.wait()


def log_tails(bots: Sequence[BotProcess], name: str = "bot", chars: int = 2500) -> str:
    """The log tails of several bot processes, each under a header (an assertion message)."""
    return "\n".join(f"--- {name} {i} log (tail) ---\n{bot.log_tail(chars)}" for i, bot in enumerate(bots))


async def scrape_metrics(url: str, http: aiohttp.ClientSession | None = None) -> dict[str, float]:
    """A bot's `/metrics` at `url`, as `{"name{'label': 'value'}": value}` (labels sorted; `name{}` without)."""
    from prometheus_client.parser import text_string_to_metric_families  # dev/metrics extra, not for benchmarks

    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.get(url) as response:
            assert response.status == 200, response.status
            text = await response.text()
    return {f"{s.name}{dict(sorted(s.labels.items()))}": s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sent(chat_id: int, check: Callable[[str], bool]) -> Callable[[Call], bool]:
    """A predicate for the bot's successful sendMessage to `chat_id` whose text satisfies `check`."""
    def predicate(call: Call) -> bool:
        return call.ok and call.params.get("chat_id") == chat_id and check(call.params.get("text", ""))

    return predicate


async def says(fake: FakeTelegram, chat_id: int, match: str | Callable[[str], bool], *, after: int,
               timeout: float, log: Callable[[], str] = lambda: "") -> Call:
    """The bot's (successful) sendMessage to `chat_id` whose text equals / satisfies `match`; on a
    timeout an AssertionError that carries `log()` (the bot's log tail, say)."""
    check = (lambda text: text == match) if isinstance(match, str) else match
    try:
        return await fake.wait_for("sendMessage", sent(chat_id, check), timeout=timeout, after=after)
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{log()}") from None


def texts(fake: FakeTelegram, chat_id: int, *, after: int = 0) -> list[str]:
    """The texts of the bot's successful sendMessage calls to `chat_id` since `after`."""
    return [c.params.get("text", "") for c in fake.calls[after:]
            if c.method == "sendMessage" and c.ok and c.params.get("chat_id") == chat_id]

"""`luka-bot` from a shell: help and version everywhere, `llm status|check|force|clear`.

`force` and `clear` are checked against a real bot process (fake Bot API, fake LLM servers,
real Redis): after `luka-bot llm force openai`, the bot's next reply comes from openai.
The command itself runs in-process (in a thread: it has its own event loop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from luka_bot.cli import main
from luka_bot.core.config import Settings, load_settings
from luka_bot.services.llm_provider_fallback import create_llm_provider_fallback
from tests.fakes.fake_llm import FakeLLM, FakeLLMThread
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.redis_server import RedisServer, free_port

OPENAI_KEY = "sk-test-cli-SECRET-0123456789"
TOKEN = "123456:CLI-token-not-real-abcdef"
USER = 3003
LEVELS = [[], ["run"], ["llm"], ["llm", "status"], ["llm", "check"], ["llm", "force"], ["llm", "clear"], ["console"]]


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A shell without the bot's settings, in an empty directory (no .env); logging restored after."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    capsys.readouterr()
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


async def acli(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    return await asyncio.to_thread(cli, capsys, *argv)


def configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


# --- help, version, arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: " ".join(level) or "luka-bot")
def test_help_and_version_on_every_level_without_starting_anything(capsys: pytest.CaptureFixture[str],
                                                                   level: list[str]) -> None:
    version = cli(capsys, *level, "--version")
    assert (version.code, version.out.strip()) == (0, "luka-bot 0.1.0")
    shown = cli(capsys, *level, "--help")
    assert shown.code == 0
    assert shown.out.startswith("usage: luka-bot" + "".join(f" {word}" for word in level)), shown.out


def test_bad_arguments_exit_2_with_a_clear_error_and_change_nothing(capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    redis_url: str) -> None:
    configure(monkeypatch, REDIS_URL=redis_url, BOT_TOKEN=TOKEN,
              AVAILABLE_PROVIDERS='{"ollama": ["m1"], "openai": ["g1"]}')
    assert cli(capsys, "llm", "force", "ollama", "600").code == 0
    client = redis.Redis.from_url(redis_url)
    before = {key: client.dump(key) for key in client.keys("*")}
    assert before
    cases = {
        ("llm", "force", "nope"): "unknown provider 'nope'; configured: ollama",
        ("llm", "force", "openai"): "provider 'openai' is not configured (set OPENAI_API_KEY)",
        ("llm", "force", "ollama", "5"): "seconds must be between 10 and 86400, not 5",
        ("llm", "force", "ollama", "ten"): "argument seconds: invalid int value: 'ten'",
        ("llm", "force"): "the following arguments are required: provider",
        ("llm", "clear", "now"): "unrecognized arguments: now",
        ("llm", "status", "--jsn"): "unrecognized arguments: --jsn",
        ("llm", "check", "--timeout", "0"): "argument --timeout: must be positive",
        ("llm", "frobnicate"): "invalid choice: 'frobnicate'",
    }
    for argv, message in cases.items():
        result = cli(capsys, *argv)
        assert result.code == 2, (argv, result)
        assert message in result.err, (argv, result.err)
        assert "Traceback" not in result.err
    # Without the bot's token the bot's namespace (llm:<bot id>:) is unknown: refuse rather than guess.
    monkeypatch.delenv("BOT_TOKEN")
    for argv in (("llm", "force", "ollama", "60"), ("llm", "clear"), ("llm", "status")):
        result = cli(capsys, *argv)
        assert result.code == 2 and "BOT_TOKEN is not set" in result.err and "Nothing changed" in result.err, result
    assert {key: client.dump(key) for key in client.keys("*")} == before


def test_force_and_clear_refuse_without_a_shared_store(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, AVAILABLE_PROVIDERS='{"ollama": ["m1"]}')
    result = cli(capsys, "llm", "force", "ollama", "60")
    assert result.code == 2 and "REDIS_URL is not set" in result.err and "Nothing changed" in result.err
    configure(monkeypatch, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", BOT_TOKEN=TOKEN)
    for argv in (("llm", "force", "ollama", "60"), ("llm", "clear"), ("llm", "status")):
        result = cli(capsys, *argv)
        assert result.code == 1, (argv, result)
        assert "Redis (REDIS_URL) is not answering" in result.err, result.err
        assert "Traceback" not in result.err and result.out == ""


async def test_status_shows_what_another_process_recorded(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    configure(monkeypatch, REDIS_URL=redis_url, OPENAI_API_KEY=OPENAI_KEY, BOT_TOKEN=TOKEN,
              AVAILABLE_PROVIDERS='{"ollama": ["m1"], "openai": ["g1", "g2"]}')
    other = create_llm_provider_fallback(load_settings())  # another process: the running bot
    try:
        await other.report_provider_failure("ollama", ConnectionRefusedError("Connection refused"))
        await other.force_provider("openai", 600)
    finally:
        await other.aclose()

    table = await acli(capsys, "llm", "status")
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert lines[0].split() == ["#", "PROVIDER", "STATE", "COOLDOWN", "LEFT", "FAILURES", "LAST", "ERROR"]
    assert lines[1].split()[:3] == ["1", "ollama", "cooling"], table.out
    assert re.search(r"cooling +(5m 0s|4m \d+s) \(probe in \d+s\) +1 ", lines[1]), "cooldown left, next probe, failures"
    assert "Connection refused" in lines[1]
    assert lines[2].split()[:3] == ["2", "openai", "unknown"], table.out  # forced, but it never answered yet
    assert "Forced: openai, 10m 0s left" in lines or "Forced: openai, 9m 59s left" in lines, table.out
    assert "State store: redis" in lines
    assert OPENAI_KEY not in table.out + table.err

    as_json = await acli(capsys, "llm", "status", "--json")
    stats = json.loads(as_json.out)
    assert stats["forced_provider"] == "openai" and stats["store"] == "redis"
    assert stats["provider_health"]["ollama"]["state"] == "cooling"
    assert stats["provider_order"] == ["ollama", "openai"]


# --- llm check -------------------------------------------------------------------------------------------


@pytest.fixture
def providers() -> Iterator[tuple[FakeLLMThread, FakeLLMThread]]:
    with FakeLLMThread(FakeLLM("ollama")) as primary, FakeLLMThread(FakeLLM("openai")) as fallback:
        yield primary, fallback


def test_check_exit_code_says_whether_the_primary_or_only_a_fallback_works(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        providers: tuple[FakeLLMThread, FakeLLMThread]) -> None:
    primary, fallback = providers
    configure(monkeypatch, OLLAMA_URL=primary.url, OPENAI_BASE_URL=fallback.v1_url, OPENAI_API_KEY=OPENAI_KEY,
              AVAILABLE_PROVIDERS='{"ollama": ["m1"], "openai": ["g1"]}')
    both = cli(capsys, "llm", "check", "--timeout", "3")
    assert both.code == 0, both
    assert [line.split()[:3] for line in both.out.splitlines()[:2]] == [
        ["ollama", "primary", "✅"], ["openai", "fallback", "✅"]]

    primary.mode = "http500"
    only_fallback = cli(capsys, "llm", "check", "--timeout", "3")
    assert only_fallback.code == 1, only_fallback
    assert only_fallback.out.splitlines()[0].split()[:3] == ["ollama", "primary", "❌"]
    assert "Only a fallback works: openai." in only_fallback.out

    primary.mode = "ok"
    fallback.mode = "http401"
    bad_key = cli(capsys, "llm", "check", "--timeout", "3")
    assert bad_key.code == 0, bad_key
    assert bad_key.out.splitlines()[1].startswith("openai       fallback  ❌ auth: "), bad_key.out
    assert bad_key.out.splitlines()[1].endswith(" — misconfigured: check OPENAI_API_KEY"), bad_key.out

    primary.mode = "http500"
    fallback.refuse()
    nothing = cli(capsys, "llm", "check", "--timeout", "3")
    assert nothing.code == 2 and "No provider works." in nothing.out, nothing

    primary.mode = "ok"
    monkeypatch.delenv("OPENAI_API_KEY")
    misconfigured = cli(capsys, "llm", "check", "--timeout", "3")
    assert misconfigured.code == 0, misconfigured
    assert misconfigured.out.splitlines()[1].split(None, 2) == ["openai", "fallback",
                                                                "⚪ not configured: set OPENAI_API_KEY"]
    assert OPENAI_KEY not in both.out + only_fallback.out + bad_key.out + nothing.out


# --- force / clear change what the running bot does ----------------------------------------------------------


@dataclass
class RunningBot:
    fake: FakeTelegram
    process: asyncio.subprocess.Process
    log_path: Path

    async def reply(self, text: str) -> str:
        mark = self.fake.mark()
        self.fake.send_message(text, user_id=USER)
        try:
            call = await self.fake.wait_for("sendMessage", lambda c: c.ok and c.params.get("chat_id") == USER
                                            and not c.params["text"].startswith("🧵"), timeout=20, after=mark)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{self.log_path.read_text()[-3000:]}") from None
        return call.params["text"]


@pytest.fixture
async def running_bot(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer,
                      tmp_path: Path) -> AsyncIterator[RunningBot]:
    if not redis_server.running:
        redis_server.restart()
    redis_server.flushall()
    env = dict(REDIS_URL=redis_server.url, BOT_TOKEN=TOKEN, OPENAI_API_KEY=OPENAI_KEY, OLLAMA_TIMEOUT="3",
               OPENAI_TIMEOUT="3", USER_RATE_LIMIT="0",  # the test user writes faster than a person
               AVAILABLE_PROVIDERS='{"ollama": ["m1"], "openai": ["g1"]}')
    async with FakeTelegram(token=TOKEN) as fake, FakeLLM("ollama") as primary, FakeLLM("openai") as fallback:
        env.update(OLLAMA_URL=primary.url, OPENAI_BASE_URL=fallback.v1_url)
        configure(monkeypatch, **env)  # the CLI's shell sees the same settings as the bot
        log_path = tmp_path / "bot.log"
        bot_env = {**os.environ, **env, "TELEGRAM_API_URL": fake.url, "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(sys.executable, "-m", "luka_bot", cwd=tmp_path,
                                                           env=bot_env, stdin=asyncio.subprocess.DEVNULL,
                                                           stdout=log, stderr=log)
        try:
            await fake.wait_polling(timeout=120)  # start-up: slow on a busy machine
            yield RunningBot(fake, process, log_path)
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def test_force_and_clear_from_the_shell_change_what_the_running_bot_answers_with(
        capsys: pytest.CaptureFixture[str], running_bot: RunningBot, redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    forced_key = f"llm:{TOKEN.split(':')[0]}:forced"  # the bot's namespace: its bot id
    try:
        assert await running_bot.reply("hello") == "answer from ollama"

        forced = await acli(capsys, "llm", "force", "openai", "120")
        assert forced.code == 0, forced
        assert forced.out.startswith("✅ openai forced for 2m 0s (until "), forced.out
        assert await client.get(forced_key) is not None
        assert await running_bot.reply("and now?") == "answer from openai"
        assert await running_bot.reply("still?") == "answer from openai"

        status = json.loads((await acli(capsys, "llm", "status", "--json")).out)
        assert status["forced_provider"] == "openai" and status["preferred_provider"] == "openai"

        cleared = await acli(capsys, "llm", "clear")
        assert cleared.code == 0, cleared
        assert cleared.out.strip() == ("🧹 Cleared. Preferred provider: openai; forced provider: openai; "
                                       "cooldowns: none.")
        assert await client.get(forced_key) is None
        assert await running_bot.reply("back?") == "answer from ollama"
    finally:
        await client.aclose()

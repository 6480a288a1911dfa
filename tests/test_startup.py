"""A clean start: settings checked before the heavy imports, Telegram waited for, the real store named.

Real bot processes (`python -m luka_bot`) against the fake Bot API on 127.0.0.1, a port where
nothing listens, and a real redis-server.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from luka_bot.core.config import ConfigError, Settings, load_settings
from luka_bot.core.loader import build_bot
from luka_bot.core.logging_setup import setup_logging
from luka_bot.startup import wait_for_telegram
from tests.conftest import wait_until
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.redis_server import RedisServer, free_port

TOKEN = "123456:START-token-not-real-0123456789"
EXTRA_KEY = "gsk-extra-SECRET-0987654321"


def clean_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k.upper() not in Settings.model_fields}
    return {**base, "PYTHONUNBUFFERED": "1", **env}


def run_bot(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "luka_bot"], cwd=tmp_path, env=clean_env(**env),
                          capture_output=True, text=True, timeout=60)


# --- configuration mistakes: one line, exit 2, before aiogram / pydantic-ai are loaded --------------------


def test_missing_token_is_reported_before_aiogram_or_pydantic_ai_is_imported(tmp_path: Path) -> None:
    probe = ("import sys\nfrom luka_bot.cli import main\ntry:\n    main([])\nexcept SystemExit as e:\n"
             "    print(e.code, sorted(m for m in ('aiogram', 'pydantic_ai', 'openai') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=clean_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "luka-bot: BOT_TOKEN is not set: put it in the environment or in .env"]


@pytest.mark.parametrize(("setting", "value"), [("BOT_TOKEN", "not a token SECRET-xyz"),
                                                ("BOT_TOKEN", "123456"),
                                                ("LOG_LEVEL", "LOUD")])
def test_malformed_setting_gets_one_line_naming_it_and_exit_2(tmp_path: Path, setting: str, value: str) -> None:
    env = {"BOT_TOKEN": TOKEN, setting: value}
    result = run_bot(tmp_path, **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0], result.stderr
    assert "Traceback" not in result.stderr and value not in result.stderr.replace(f"'{value}'", "")


def test_log_level_is_case_insensitive() -> None:
    assert load_settings(_env_file=None, LOG_LEVEL="debug").LOG_LEVEL == "DEBUG"


def test_secret_values_include_extra_providers_keys_and_logs_redact_them() -> None:
    settings = load_settings(_env_file=None, BOT_TOKEN=TOKEN, OPENAI_API_KEY="sk-SECRET-openai-123",
                             LLM_EXTRA_PROVIDERS={"groq": {"base_url": "http://127.0.0.1:9/v1", "api_key": EXTRA_KEY}},
                             AVAILABLE_PROVIDERS={"ollama": ["m"], "groq": ["g"]})
    assert sorted(settings.secret_values()) == sorted([TOKEN, "sk-SECRET-openai-123", EXTRA_KEY])
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO", settings.secret_values())
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("httpx2").warning("POST with Authorization: Bearer %s failed", EXTRA_KEY)
        logging.getLogger("aiogram").error("GET /bot%s/getMe failed", TOKEN)
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    output = stream.getvalue()
    assert EXTRA_KEY not in output and TOKEN not in output, output
    assert output.count("failed") == 2


async def test_token_refused_by_telegram_is_one_line_naming_bot_token(tmp_path: Path) -> None:
    async with FakeTelegram(token=TOKEN) as fake:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "luka_bot", cwd=tmp_path, env=clean_env(
                BOT_TOKEN="123456:WRONG-token-SECRET", TELEGRAM_API_URL=fake.url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    stderr = err.decode()
    assert process.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "BOT_TOKEN" in lines[0] and "Unauthorized" in lines[0], stderr
    assert "WRONG-token-SECRET" not in stderr + out.decode()
    assert [c.method for c in fake.calls] == ["getMe"], "nothing else was tried with a refused token"


# --- Telegram unreachable at start-up; the store really in use ------------------------------------------


class BotProcess:
    def __init__(self, process: asyncio.subprocess.Process, log_path: Path):
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, text: str, count: int = 1) -> None:
        try:
            await wait_until(lambda: self.log().count(text) >= count or self.process.returncode is not None,
                             rounds=2400, interval=0.05)
        except AssertionError:
            raise AssertionError(f"{text!r} x{count} not logged:\n{self.log()[-3000:]}") from None
        assert self.log().count(text) >= count, self.log()[-3000:]

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.process.wait(), 30)


@asynccontextmanager
async def bot_process(tmp_path: Path, **env: str) -> AsyncIterator[BotProcess]:
    log_path = tmp_path / "bot.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "luka_bot", cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            env=clean_env(**{"BOT_TOKEN": TOKEN, "AVAILABLE_PROVIDERS": json.dumps({"ollama": ["m1"]}),
                             "OLLAMA_URL": "http://127.0.0.1:9", "LOG_LEVEL": "INFO", **env}))
    bot = BotProcess(process, log_path)
    try:
        yield bot
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_unreachable_telegram_is_retried_with_one_line_per_try_then_the_bot_starts(tmp_path: Path) -> None:
    port = free_port()
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with bot_process(tmp_path, TELEGRAM_API_URL=f"http://127.0.0.1:{port}", REDIS_URL=dead_redis) as bot:
        await bot.wait_log("Telegram is not reachable", count=2)
        assert bot.process.returncode is None, "it keeps trying"
        fake = await FakeTelegram(token=TOKEN).start(port)
        try:
            await fake.wait_polling(timeout=120)
            await bot.wait_log("luka_bot starting")
            assert await bot.stop() == 0
        finally:
            await fake.stop()
    log = bot.log()
    tries = [line for line in log.splitlines() if "Telegram is not reachable" in line]
    assert tries[0].split("WARNING luka_bot: ")[1].startswith("⏳ Telegram is not reachable ("), tries[0]
    assert "try 1 failed, next in 1s" in tries[0] and "try 2 failed, next in 2s" in tries[1], tries
    assert "Traceback" not in log, log
    assert TOKEN not in log
    start = next(line for line in log.splitlines() if "luka_bot starting" in line)
    assert "@luka_test_bot" in start and "state store: degraded: Redis is not answering" in start, start
    assert start.endswith("send budget: 30/s, shared by every replica through Redis (this process alone until "
                          "Redis answers))"), start


async def test_start_up_line_says_redis_when_redis_answers(tmp_path: Path, redis_server: RedisServer) -> None:
    if not redis_server.running:
        redis_server.restart()
    async with FakeTelegram(token=TOKEN) as fake, bot_process(tmp_path, TELEGRAM_API_URL=fake.url,
                                                              REDIS_URL=redis_server.url) as bot:
        await fake.wait_polling(timeout=120)
        await bot.wait_log("luka_bot starting")
        assert await bot.stop() == 0
    start = next(line for line in bot.log().splitlines() if "luka_bot starting" in line)
    assert start.endswith("(state store: redis (shared); send budget: 30/s, shared by every replica (Redis))"), start
    assert "Telegram is not reachable" not in bot.log()
    assert "📥 Inbox: durable (Redis stream luka:123456:inbox)" in bot.log()


async def test_start_up_says_a_bot_without_redis_is_not_durable(tmp_path: Path) -> None:
    async with FakeTelegram(token=TOKEN) as fake, bot_process(tmp_path, TELEGRAM_API_URL=fake.url) as bot:
        await fake.wait_polling(timeout=120)
        await bot.wait_log("Inbox: process memory")
        assert await bot.stop() == 0
    start = next(line for line in bot.log().splitlines() if "luka_bot starting" in line)
    assert "state store: memory (this process only, not durable" in start, start
    assert "📥 Inbox: process memory, NOT durable" in bot.log()


# --- a TELEGRAM_API_URL that is not (quite) the Bot API ------------------------------------------------------


@asynccontextmanager
async def web_server(status: int, body: str, content_type: str, port: int = 0) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 answering every request with the same page."""
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


NOT_THE_BOT_API = [
    pytest.param(404, "<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>", "text/html",
                 "an HTML page", id="html-404"),
    pytest.param(501, "<html><body>Unsupported method ('POST')</body></html>", "text/html", "an HTML page",
                 id="html-501"),
    pytest.param(200, "OK", "text/plain", "a body that is not JSON", id="text-200"),
    pytest.param(200, '{"status": "healthy"}', "application/json", "JSON that is not a Bot API getMe answer",
                 id="json-200"),
]


def not_the_bot_api_line(url: str, what: str) -> str:
    return (f"TELEGRAM_API_URL ({url}) does not answer like the Bot API: getMe returned {what}. Point it at "
            "a Bot API server (e.g. telegram-bot-api's http://localhost:8081), or unset it to use api.telegram.org")


@pytest.mark.parametrize(("status", "body", "content_type", "what"), NOT_THE_BOT_API)
async def test_a_server_that_is_not_the_bot_api_is_named_in_one_line(status: int, body: str, content_type: str,
                                                                     what: str) -> None:
    async with web_server(status, body, content_type) as url:
        bot = build_bot(load_settings(_env_file=None, BOT_TOKEN=TOKEN, TELEGRAM_API_URL=url))
        try:
            with pytest.raises(ConfigError) as excinfo:
                await wait_for_telegram(bot, api_url=url)
        finally:
            await bot.session.close()
    assert str(excinfo.value) == not_the_bot_api_line(url, what)
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


async def test_start_up_against_a_web_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    async with web_server(404, "<html><body><h1>404 Not Found</h1></body></html>", "text/html") as url:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "luka_bot", cwd=tmp_path, env=clean_env(BOT_TOKEN=TOKEN, TELEGRAM_API_URL=url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    stderr = err.decode()
    assert process.returncode == 2, stderr
    assert stderr.strip().splitlines() == [f"luka-bot: {not_the_bot_api_line(url, 'an HTML page')}"]
    assert TOKEN not in stderr + out.decode()


def test_a_password_in_telegram_api_url_is_not_shown() -> None:
    from aiogram.exceptions import ClientDecodeError

    from luka_bot.core.bot_api_session import not_the_bot_api

    error = ClientDecodeError("Failed to decode object", ValueError("x"), "<html></html>")
    assert not_the_bot_api(error, "http://bot:SECRET@127.0.0.1:8081/").startswith(
        "TELEGRAM_API_URL (http://127.0.0.1:8081/) does not answer like the Bot API: getMe returned an HTML page.")


async def test_a_proxys_gateway_error_page_is_waited_out_like_an_unreachable_telegram(tmp_path: Path) -> None:
    port = free_port()
    async with bot_process(tmp_path, TELEGRAM_API_URL=f"http://127.0.0.1:{port}") as bot:
        async with web_server(502, "<html><body>502 Bad Gateway</body></html>", "text/html", port):
            await bot.wait_log("Telegram is not reachable", count=2)
        assert bot.process.returncode is None, "it keeps trying"
        fake = await FakeTelegram(token=TOKEN).start(port)
        try:
            await fake.wait_polling(timeout=120)
            assert await bot.stop() == 0
        finally:
            await fake.stop()
    log = bot.log()
    assert "⏳ Telegram is not reachable (HTTP 502, and the body is not JSON); try 1 failed" in log, log
    assert "Traceback" not in log


class GetMeWithoutIsBot(FakeTelegram):
    """getMe as the `telegram-test-api` emulator (npm) answers it: `id`, `first_name`, `username` only."""

    def _get_me(self) -> dict[str, object]:
        return {key: value for key, value in super()._get_me().items() if key != "is_bot"}


async def test_a_bot_api_emulator_whose_getme_lacks_is_bot_runs_the_bot(tmp_path: Path) -> None:
    async with GetMeWithoutIsBot(token=TOKEN) as fake, bot_process(tmp_path, TELEGRAM_API_URL=fake.url) as bot:
        await fake.wait_polling(timeout=120)
        mark = fake.mark()
        fake.send_message("/start", user_id=4242)
        answer = await fake.wait_for("sendMessage", lambda call: call.params.get("chat_id") == 4242, timeout=60,
                                     after=mark)
        assert "Luka" in answer.params["text"]
        assert await bot.stop() == 0
    log = bot.log()
    assert log.count("getMe has no is_bot") == 1, log
    assert "@luka_test_bot" in next(line for line in log.splitlines() if "luka_bot starting" in line)
    assert "Traceback" not in log and "ClientDecodeError" not in log, log


# --- what start-up says about the providers ---------------------------------------------------------------


RETIRED_MODEL_REPORT = [
    "INFO luka_bot: 🔧 LLM provider ollama (primary): http://127.0.0.1:9/v1, models m1; no key needed; "
    "context window 4096 tokens; not checked yet",
    "INFO luka_bot: 🔧 LLM provider openai (fallback): https://api.openai.com/v1, models gpt-4-turbo; "
    "key set (OPENAI_API_KEY); not checked yet",
    "ERROR luka_bot: ❌ openai model gpt-4-turbo was retired on 2026-10-23: its requests fail; replacement: "
    "gpt-5.6-sol (see https://developers.openai.com/api/docs/deprecations#2026-04-22-legacy-gpt-model-snapshots)"
    " — change AVAILABLE_PROVIDERS or OPENAI_MODEL_NAME",
    "WARNING luka_bot: ⚠️ No fallback can answer: if ollama fails, users get an apology",
]


async def test_start_up_names_a_retired_model_and_claims_no_fallback_that_cannot_answer(tmp_path: Path) -> None:
    """The lines themselves, case by case, are tests/test_provider_report.py's; this is the real process."""
    expected = RETIRED_MODEL_REPORT
    env = {"AVAILABLE_PROVIDERS": json.dumps({"ollama": ["m1"], "openai": ["gpt-4-turbo"]}), "OPENAI_API_KEY": EXTRA_KEY}
    async with FakeTelegram(token=TOKEN) as fake, bot_process(tmp_path, TELEGRAM_API_URL=fake.url, **env) as bot:
        await fake.wait_polling(timeout=120)
        assert await bot.stop() == 0
    lines = bot.log().splitlines()
    start = next(i for i, line in enumerate(lines) if "luka_bot starting" in line)
    report = [line.split(" ", 2)[2] for line in lines[start + 1:start + 1 + len(expected)]]
    assert report == expected, "\n".join(lines)
    assert EXTRA_KEY not in bot.log()


async def test_start_up_line_says_the_send_budget_is_per_process_without_redis(tmp_path: Path) -> None:
    async with FakeTelegram(token=TOKEN) as fake, bot_process(tmp_path, TELEGRAM_API_URL=fake.url,
                                                              TELEGRAM_SENDS_PER_SECOND="25") as bot:
        await fake.wait_polling(timeout=120)
        await bot.wait_log("luka_bot starting")
        assert await bot.stop() == 0
    start = next(line for line in bot.log().splitlines() if "luka_bot starting" in line)
    assert start.endswith("send budget: 25/s, this process only (set REDIS_URL to share it between replicas))"), start

"""`luka-bot console`: the bot's handlers and fallback in a terminal, through a real process's stdin/stdout.

Fake LLM servers on 127.0.0.1 (ollama = primary, openai = fallback), no Telegram, no Redis.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from luka_bot.core.config import Settings
from tests.conftest import wait_until
from tests.fakes.fake_llm import FakeLLM

OPENAI_KEY = "sk-test-console-SECRET-42"


class Terminal:
    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    async def type(self, text: str, *, expect: str, timeout: float = 30.0) -> list[str]:
        """Type a line; wait for an output line matching the regex `expect`; return what was printed."""
        assert self.process.stdin is not None
        mark = len(self.lines)
        self.process.stdin.write(text.encode() + b"\n")
        await self.process.stdin.drain()
        try:
            await wait_until(lambda: any(re.fullmatch(expect, line) for line in self.lines[mark:]),
                             rounds=int(timeout / 0.05), interval=0.05)
        except AssertionError:
            raise AssertionError(f"after {text!r}, no line matching {expect!r} in:\n" +
                                 "\n".join(self.lines[mark:])) from None
        return self.lines[mark:]

    async def quit(self) -> tuple[int, str]:
        assert self.process.stdin is not None and self.process.stderr is not None
        self.process.stdin.close()
        code = await asyncio.wait_for(self.process.wait(), 30)
        await self._reader
        return code, (await self.process.stderr.read()).decode()


@pytest.fixture
async def providers() -> AsyncIterator[tuple[FakeLLM, FakeLLM]]:
    async with FakeLLM("ollama") as primary, FakeLLM("openai") as fallback:
        yield primary, fallback


async def test_console_chats_through_the_fallback_and_tags_each_reply_with_its_provider(
        providers: tuple[FakeLLM, FakeLLM], tmp_path: Path) -> None:
    primary, fallback = providers
    env = {k: v for k, v in os.environ.items() if k.upper() not in Settings.model_fields}
    env.update(OLLAMA_URL=primary.url, OPENAI_BASE_URL=fallback.v1_url, OPENAI_API_KEY=OPENAI_KEY,
               AVAILABLE_PROVIDERS='{"ollama": ["m1"], "openai": ["g1"]}', OLLAMA_TIMEOUT="3",
               OPENAI_TIMEOUT="3", LLM_CONNECT_TIMEOUT="1", PYTHONUNBUFFERED="1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "luka_bot", "console", cwd=tmp_path, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    terminal = Terminal(process)
    try:
        # The first answer waits for the process to start (imports take long on a busy machine).
        shown = await terminal.type("/start", expect=r"luka: 👋 Hi! I'm Luka\..*", timeout=120)
        assert shown[0].startswith("luka: "), "a reply that needed no LLM has no provider tag"

        shown = await terminal.type("hello", expect=r"luka \(ollama\): answer from ollama")
        assert "luka (ollama): 🧵 answer from ollama" in shown, "the new thread is named"

        await primary.stop()
        shown = await terminal.type("are you there?", expect=r"luka \(openai\): answer from openai")
        await wait_until(lambda: any(line.startswith("luka: 🔴 LLM provider ollama is down")
                                     for line in terminal.lines), rounds=600, interval=0.05)

        await primary.start(primary.port)
        primary.reset_counts()
        shown = await terminal.type("/llm_force openai 60", expect=r"luka: ✅ openai forced for 1m 0s .*")
        shown = await terminal.type("who answers now?", expect=r"luka \(openai\): answer from openai")
        assert primary.count() == 0, "ollama is up again, but forced openai answered"

        shown = await terminal.type("/llm_status", expect=r"  \[#\d+ 🧹 Clear\].*")
        assert "luka: 🤖 LLM providers" in shown
        assert "  Forced: openai, 59s left" in shown or "  Forced: openai, 1m 0s left" in shown, shown
        clear = re.search(r"\[#(\d+) 🧹 Clear\]", "\n".join(shown))
        assert clear is not None
        shown = await terminal.type(f"#{clear.group(1)}", expect=r"luka \(notice\): Cleared")
        assert any(line.startswith("luka (edited): 🤖 LLM providers") for line in shown), shown
        assert "  Forced: none" in shown, shown

        await terminal.type("and now?", expect=r"luka \(ollama\): answer from ollama")
    finally:
        code, stderr = await terminal.quit()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert OPENAI_KEY not in stderr + "\n".join(terminal.lines)

"""End to end: formatted answers from the real bot process (`python -m luka_bot`) against fakes on 127.0.0.1.

The bot streams (STREAM_DRAFT_INTERVAL=0.05) a paced FakeLLM's Markdown answer to a FakeTelegram
that checks every entity as Telegram does (UTF-16 offsets and lengths, link addresses). The tests
are one story, in file order; the last one teaches the bot that drafts are not offered.

Run with `-s` to see the transcripts (draft frames, then the messages, entities marked).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from luka_bot.services.rendering import render_markdown
from tests.fakes.bot_process import BotProcess, bot_env, says, stop_all
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.model_answers import PATHLIB, long_answer
from tests.test_e2e_streaming import PacedLLM

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "123456:E2E-render-token-not-real"
USER = 1201
WAIT = 20.0


@dataclass
class World:
    fake: FakeTelegram
    llm: PacedLLM
    bot: BotProcess
    transcripts: list[str]

    def calls(self, method: str, *, after: int, before: int | None = None) -> list[Call]:
        return [c for c in self.fake.calls[after:before] if c.method == method and c.params.get("chat_id") == USER]

    async def ask(self, question: str, answer: str, *, until: Any) -> tuple[int, Call]:
        """The user asks; the model answers `answer`; wait for the bot's sendMessage satisfying `until`."""
        self.llm.reply = answer
        mark = self.fake.mark()
        self.fake.send_message(question, user_id=USER)
        return mark, await says(self.fake, USER, until, after=mark, timeout=WAIT, log=self.bot.report)

    def transcript(self, title: str, *, after: int) -> None:
        lines = [f"--- {title} ---"]
        for call in self.fake.calls[after:]:
            if call.params.get("chat_id") == USER and call.ok and call.method in ("sendMessageDraft", "sendMessage"):
                kinds = sorted({e["type"] for e in call.params.get("entities", [])})
                kind = "draft" if call.method == "sendMessageDraft" else "message"
                lines.append(f"  [{kind}] entities: {', '.join(kinds) or 'none'}\n    "
                             + call.params.get("text", "").replace("\n", "\n    "))
        self.transcripts.append("\n".join(lines))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    workdir = tmp_path_factory.mktemp("e2e_render")
    fake = await FakeTelegram(token=TOKEN).start()
    llm = await PacedLLM("ollama").start()
    env = bot_env(fake, llm, OLLAMA_TIMEOUT=5, LLM_CONNECT_TIMEOUT=0.5, STREAMING="on", STREAM_DRAFT_INTERVAL=0.05,
                  LOG_LEVEL="INFO", TELEGRAM_CHAT_SENDS_PER_SECOND=40)  # this fake has no flood control
    world = World(fake, llm, await BotProcess.start(env, workdir), [])
    try:
        await world.bot.wait_polling(fake, timeout=30)
        yield world
    finally:
        await world.bot.stop(grace=10)
        await stop_all(llm, fake)
        print("\n" + "\n\n".join(world.transcripts))


def entities(call: Call) -> list[tuple[str, str]]:
    """(type, covered text) of a call's entities."""
    units = call.params["text"].encode("utf-16-le")
    return [(e["type"], units[2 * e["offset"]:2 * (e["offset"] + e["length"])].decode("utf-16-le"))
            for e in call.params.get("entities", [])]


async def test_a_markdown_answer_is_formatted_in_its_drafts_and_in_its_message(world: World) -> None:
    expected = render_markdown(PATHLIB)
    mark, final = await world.ask("How do I read a file?", PATHLIB, until=lambda text: text == expected.text)
    world.transcript("A Markdown answer, streamed", after=mark)

    kinds = {kind for kind, _ in entities(final)}
    assert {"bold", "code", "pre", "text_link"} <= kinds and "parse_mode" not in final.params
    assert not re.search(r"\*\*|```|\|---", final.params["text"])
    drafts = world.calls("sendMessageDraft", after=mark, before=final.index)
    assert drafts and all(d.ok for d in drafts), "every frame's entities accepted"
    mid_fence = drafts[0]
    assert "```" not in mid_fence.params["text"] and entities(mid_fence)[-1][0] == "pre", \
        "the draft cut inside the code fence shows the code so far as code"
    for draft in drafts:  # the text does not jump when the draft becomes the message
        assert final.params["text"].startswith(draft.params["text"])
        ends = len(draft.params["text"].encode("utf-16-le")) // 2
        closed = [e for e in draft.params.get("entities", []) if e["offset"] + e["length"] < ends]
        assert all(e in final.params["entities"] for e in closed), (closed, final.params["entities"])
    name = next(c for c in world.calls("sendMessage", after=mark) if c.params["text"].startswith("🧵"))
    assert "entities" not in name.params and "parse_mode" not in name.params, "the thread name stays plain"


async def test_a_9000_character_answer_arrives_in_formatted_messages_each_code_block_whole(world: World) -> None:
    answer = long_answer()
    blocks = [code for kind, code in render_markdown_entities(answer) if kind == "pre"]
    mark, last = await world.ask("Walk me through it", answer, until=lambda text: text.endswith("return total_13"))
    world.transcript("A 9000-character answer with code", after=mark)
    messages = [c for c in world.calls("sendMessage", after=mark) if c.ok]
    assert len(messages) >= 3 and messages[-1] is last
    assert all(len(m.params["text"].encode("utf-16-le")) // 2 <= 4096 for m in messages)
    sent_blocks = [code for m in messages for kind, code in entities(m) if kind == "pre"]
    assert sent_blocks == blocks, "each code block whole, in one message, in order"
    joined = "".join(m.params["text"] for m in messages)
    assert re.sub(r"\s", "", joined) == re.sub(r"\s", "", render_markdown(answer).text), "nothing lost"
    assert all(d.ok for d in world.calls("sendMessageDraft", after=mark))


async def shown(world: World, text: str, *, after: int) -> Call:
    """The answer shown to the user: a message, or the edit that completes one (drafts refused)."""
    def match(call: Call) -> bool:
        return call.ok and call.params.get("chat_id") == USER and call.params.get("text") == text

    waits = [asyncio.create_task(world.fake.wait_for(method, match, timeout=WAIT, after=after))
             for method in ("sendMessage", "editMessageText")]
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in pending:
        wait.cancel()
    return done.pop().result()


def render_markdown_entities(markdown: str) -> list[tuple[str, str]]:
    rendered = render_markdown(markdown)
    units = rendered.text.encode("utf-16-le")
    return [(e.type, units[2 * e.offset:2 * (e.offset + e.length)].decode("utf-16-le")) for e in rendered.entities]


async def test_entities_telegram_refuses_the_same_text_goes_plain_and_one_line_is_logged(world: World) -> None:
    world.fake.fail_next("sendMessage", error_code=400,
                         description="Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 3")
    plain = render_markdown(PATHLIB).plain()
    mark, final = await world.ask("Again, please", PATHLIB, until=lambda text: text == plain)
    refused = world.calls("sendMessage", after=mark)[0]
    assert refused.error and refused.params.get("entities"), "the formatted message was refused"
    assert "entities" not in final.params and "(https://docs.python.org/3/library/pathlib.html)" in plain, \
        "the same text, plain, the link's address written out: nothing lost"
    log = world.bot.log()
    assert log.count("refused the formatting") == 1 and "Traceback" not in log


async def test_a_draft_refused_with_a_body_that_is_not_the_bot_apis_is_remembered_and_logged_once(
    world: World,
) -> None:
    html = "<html>\n<body>\n<h1>404 Not Found</h1>\n</body>\n</html>"  # a proxy's page, not the Bot API's JSON
    world.fake.refuse("sendMessageDraft", error_code=404, body=html)
    world.llm.reply = "Short and sweet."
    for question in ("One?", "Two?", "Three?"):
        mark = world.fake.mark()
        world.fake.send_message(question, user_id=USER)
        await shown(world, "Short and sweet.", after=mark)
    drafts = world.fake.calls_of("sendMessageDraft")
    assert len([d for d in drafts if not d.ok]) == 1, "refused once, then remembered: no draft call per reply"
    log = world.bot.log()
    lines = [line for line in log.splitlines() if "sendMessageDraft refused in private chats" in line]
    assert len(lines) == 1 and "not a Bot API answer: '<html> <body> <h1>404 Not Found" in lines[0], lines
    assert "reply preview ended" not in log and "Content:" not in log and "Traceback" not in log

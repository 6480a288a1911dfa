"""End to end: streamed replies, the real bot process (`python -m luka_bot`) against fakes on 127.0.0.1.

One bot process (STREAM_DRAFT_INTERVAL=0.05) long-polls a FakeTelegram; two paced FakeLLM
servers stream their replies piece by piece (ollama = primary, openai = fallback); a real
redis-server holds the shared state and the conversations. The tests are one story, in file
order; each waits for the bot's answer, never for a fixed time.

Run with `-s` to see the transcripts (draft frames, then the final message) a user gets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web

from tests.fakes.bot_process import BotProcess, bot_env, empty_redis, says, stop_all
from tests.fakes.fake_llm import FakeLLM, split_text
from tests.fakes.fake_telegram import Call, FakeTelegram
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "123456:E2E-stream-token-not-real"
BOT_ID = TOKEN.split(":")[0]
COOLDOWN_OLLAMA = f"llm:{BOT_ID}:cooldown:ollama"  # the fallback state's key of the primary's cooldown
OPENAI_KEY = "sk-test-e2e-stream-SECRET-42"
ADMIN = 5001
USER = 1101
WAIT = 15.0
PRIMARY_REPLY = "Rome was not built in a day, and neither is a good answer."
FALLBACK_REPLY = "The fallback says: Rome took centuries to build."
STOPPED_EN = "⏹ Stopped."


class PacedLLM(FakeLLM):
    """A FakeLLM whose streamed replies come piece by piece, `pace` s apart, like a model generating.

    `hold`: when set to an unset `asyncio.Event`, the stream pauses after its first content piece
    until the event is set (or the client goes away). `truncate`: the stream ends cleanly after its
    content, but without a finish reason and without `[DONE]` (a truncated answer).
    """

    pace = 0.15
    hold: asyncio.Event | None = None
    truncate = False

    async def _stream(self, request: web.Request, body: dict[str, Any], model: str, mode: str) -> web.StreamResponse:
        if mode not in ("ok", "cut_stream") or body.get("tools") and "final_result" in json.dumps(body["tools"]):
            return await super()._stream(request, body, model, mode)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for index, chunk in enumerate(self._stream_chunks(body, model)):
            if self.truncate and chunk["choices"] and chunk["choices"][0]["finish_reason"]:
                await response.write_eof()
                return response
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if index == 0:
                continue
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(self.pace)  # the model generating its next piece
            if mode == "cut_stream":  # role chunk + first content piece, then the connection drops
                return await self._drop_connection(request, response)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@dataclass
class World:
    fake: FakeTelegram
    primary: PacedLLM
    fallback: PacedLLM
    redis: aioredis.Redis
    bot: BotProcess
    transcripts: list[str]

    def log(self) -> str:
        return self.bot.log()

    async def says(self, chat_id: int, match: str | Callable[[str], bool], *, after: int,
                   timeout: float = WAIT) -> Call:
        return await says(self.fake, chat_id, match, after=after, timeout=timeout, log=self.bot.report)

    def calls(self, method: str, *, after: int, before: int | None = None) -> list[Call]:
        return [c for c in self.fake.calls[after:before] if c.method == method and c.params.get("chat_id") == USER]

    async def history(self) -> list[dict[str, str]]:
        thread = await self.redis.get(f"luka:{BOT_ID}:thread:current:{USER}")
        history = await self.redis.lrange(f"luka:{BOT_ID}:history:{USER}:{thread}", 0, -1)
        return [{"role": turn["role"], "text": turn["text"]} for turn in map(json.loads, history)]

    def transcript(self, title: str, *, after: int) -> str:
        """What the user saw: draft frames, edits and messages, in order."""
        lines = [f"--- {title} ---"]
        for call in self.fake.calls[after:]:
            if call.params.get("chat_id") != USER or not call.ok:
                continue
            text = call.params.get("text", "")
            if call.method == "sendMessageDraft":
                lines.append(f"  [draft]   {text or '(Thinking…)'}")
            elif call.method == "editMessageText":
                lines.append(f"  [edit]    {text}")
            elif call.method == "sendMessage":
                lines.append(f"  [message] {text}")
        self.transcripts.append("\n".join(lines))
        return self.transcripts[-1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    empty_redis(redis_server)
    workdir = tmp_path_factory.mktemp("e2e_stream")
    fake = await FakeTelegram(token=TOKEN).start()
    fake.add_chat(ADMIN, first_name="Admin")
    primary = await PacedLLM("ollama", reply=PRIMARY_REPLY).start()
    fallback = await PacedLLM("openai", reply=FALLBACK_REPLY).start()
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    env = bot_env(fake, primary, fallback, redis_url=redis_server.url, admin=ADMIN, openai_key=OPENAI_KEY,
                  OLLAMA_TIMEOUT=5, OPENAI_TIMEOUT=5, LLM_CONNECT_TIMEOUT=0.5, STREAMING="on",
                  STREAM_DRAFT_INTERVAL=0.05, LOG_LEVEL="INFO",
                  TELEGRAM_CHAT_SENDS_PER_SECOND=40)  # this fake has no flood control: frames every 0.05 s
    world = World(fake, primary, fallback, client, await BotProcess.start(env, workdir), [])
    try:
        await world.bot.wait_polling(fake, timeout=30)
        yield world
    finally:
        await world.bot.stop(grace=10)
        await client.aclose()
        await stop_all(primary, fallback, fake)
        print("\n" + "\n\n".join(world.transcripts))


async def _clear(world: World) -> None:
    """Back to a healthy primary: /llm_clear as the admin."""
    mark = world.fake.mark()
    world.fake.send_message("/llm_clear", user_id=ADMIN)
    await world.says(ADMIN, lambda t: t.startswith("🧹 Cleared."), after=mark)


# --- the story -----------------------------------------------------------------------------------------


async def test_the_bot_asks_telegram_for_stop_updates(world: World) -> None:
    polls = world.fake.calls_of("getUpdates")
    allowed = next(c.params["allowed_updates"] for c in polls if "allowed_updates" in c.params)
    assert "stopped_message_generation" in allowed and "message" in allowed


async def test_drafts_arrive_before_the_final_message(world: World) -> None:
    mark = world.fake.mark()
    question = world.fake.send_message("Tell me about Rome", user_id=USER)
    final = await world.says(USER, PRIMARY_REPLY, after=mark)

    drafts = world.calls("sendMessageDraft", after=mark, before=final.index)
    assert len(drafts) >= 2, world.transcript("drafts", after=mark)
    assert all(d.ok and d.params["draft_id"] == question["message_id"] for d in drafts), "one draft_id per reply"
    assert all(d.params.get("can_stop") is True for d in drafts), "every frame offers the Stop button"
    texts = [d.params.get("text", "") for d in drafts]
    assert all(PRIMARY_REPLY.startswith(t) and t for t in texts), texts
    assert texts == sorted(texts, key=len), "the draft grows as the answer streams"
    assert world.calls("sendMessageDraft", after=final.index) == [], "no frame after the final message"
    assert await world.history() == [{"role": "user", "text": "Tell me about Rome"},
                                     {"role": "assistant", "text": PRIMARY_REPLY}]
    world.transcript("A streamed reply (STREAM_DRAFT_INTERVAL=0.05)", after=mark)


async def test_flood_control_on_drafts_pauses_them_and_the_reply_still_arrives(world: World) -> None:
    world.fake.fail_next("sendMessageDraft", error_code=429, description="Too Many Requests: retry after 30",
                         retry_after=30)
    mark = world.fake.mark()
    started = time.monotonic()
    world.fake.send_message("And Florence?", user_id=USER)
    final = await world.says(USER, PRIMARY_REPLY, after=mark)
    assert time.monotonic() - started < 4, "the reply does not wait for the flood-control pause"
    drafts = world.calls("sendMessageDraft", after=mark)
    assert len(drafts) == 1 and drafts[0].error and drafts[0].error["error_code"] == 429, \
        "no draft frame inside the 30 s the server asked for (and the refused one is not retried)"
    assert final.ok


async def test_a_short_flood_pause_slows_the_drafts_and_they_resume(world: World) -> None:
    world.primary.pace = 0.5  # ~2 s of streaming
    world.fake.fail_next("sendMessageDraft", error_code=429, description="Too Many Requests: retry after 1",
                         retry_after=1)
    try:
        mark = world.fake.mark()
        world.fake.send_message("And Venice?", user_id=USER)
        final = await world.says(USER, PRIMARY_REPLY, after=mark)
    finally:
        world.primary.pace = PacedLLM.pace
    refused, *resumed = world.calls("sendMessageDraft", after=mark, before=final.index)
    assert refused.error and refused.error["error_code"] == 429
    assert resumed and all(d.ok for d in resumed), world.transcript("429 then drafts", after=mark)
    assert resumed[0].at - refused.at >= 1.0, "the next frame waited retry_after"


async def test_stop_cancels_the_reply_and_keeps_the_partial_text(world: World) -> None:
    hold = world.primary.hold = asyncio.Event()
    try:
        mark = world.fake.mark()
        question = world.fake.send_message("Write me a long poem", user_id=USER)
        first = split_text(PRIMARY_REPLY)[0]
        await world.fake.wait_for("sendMessageDraft", lambda c: c.ok and c.params.get("text") == first, after=mark)
        world.fake.stop_generation(USER, question["message_id"])
        await world.says(USER, f"{first.rstrip()}\n\n{STOPPED_EN}", after=mark)
    finally:
        hold.set()
        world.primary.hold = None
    assert world.fallback.count() == 0, "a Stop is not a failure: nothing falls back"
    assert await world.redis.get(COOLDOWN_OLLAMA) is None, "and the primary is not cooled down"
    history = await world.history()
    assert history[-1] == {"role": "assistant", "text": PRIMARY_REPLY}, "a stopped reply stays out of the history"
    assert "stopped by the user" in world.log()
    world.transcript("Stop pressed while the reply streams", after=mark)


async def test_a_stream_cut_after_the_first_token_restarts_on_the_fallback(world: World) -> None:
    world.primary.mode = "cut_stream"
    try:
        mark = world.fake.mark()
        world.fake.send_message("What about Milan?", user_id=USER)
        final = await world.says(USER, FALLBACK_REPLY, after=mark)
    finally:
        world.primary.mode = "ok"
    messages = [c.params["text"] for c in world.calls("sendMessage", after=mark) if c.ok]
    assert messages == [FALLBACK_REPLY], "one complete answer, never the cut one"
    drafts = [c.params.get("text", "") for c in world.calls("sendMessageDraft", after=mark, before=final.index)]
    # The draft shows the primary's words, then starts over ("" = Telegram's "Thinking…" placeholder,
    # skipped when the fallback's first words are already there) with the fallback's.
    cut_at = next(i for i, text in enumerate(drafts) if not (text and PRIMARY_REPLY.startswith(text)))
    assert cut_at >= 1, drafts
    assert all(FALLBACK_REPLY.startswith(text) for text in drafts[cut_at:]) and any(drafts[cut_at:]), drafts
    assert (await world.history())[-1] == {"role": "assistant", "text": FALLBACK_REPLY}
    assert await world.redis.get(COOLDOWN_OLLAMA) is not None, "the provider that cut is recorded"
    assert "↻ Stream from ollama/m1 broke off after the first token" in world.log()
    world.transcript("A stream cut after the first token, restarted on the fallback", after=mark)
    await _clear(world)


async def test_a_truncated_stream_is_not_an_answer_and_restarts_on_the_fallback(world: World) -> None:
    world.primary.truncate = True
    try:
        mark = world.fake.mark()
        world.fake.send_message("What about Turin?", user_id=USER)
        final = await world.says(USER, FALLBACK_REPLY, after=mark)
    finally:
        world.primary.truncate = False
    drafts = [c.params.get("text", "") for c in world.calls("sendMessageDraft", after=mark, before=final.index)]
    assert any(text and PRIMARY_REPLY.startswith(text) for text in drafts), "the primary's words were streamed"
    assert [c.params["text"] for c in world.calls("sendMessage", after=mark) if c.ok] == [FALLBACK_REPLY]
    assert (await world.history())[-1] == {"role": "assistant", "text": FALLBACK_REPLY}
    assert await world.redis.get(COOLDOWN_OLLAMA) is not None
    world.transcript("A truncated stream (no finish reason), restarted on the fallback", after=mark)
    await _clear(world)


async def test_drafts_refused_the_reply_streams_by_edits(world: World) -> None:
    world.fake.refuse("sendMessageDraft")  # a Bot API server without drafts
    mark = world.fake.mark()
    world.fake.send_message("Is Naples nice?", user_id=USER)
    await world.fake.wait_for("editMessageText", lambda c: c.ok and c.params.get("text") == PRIMARY_REPLY,
                              after=mark)
    assert world.fake.sent_messages(USER)[-1]["text"] == PRIMARY_REPLY
    assert "📝 sendMessageDraft refused in private chats" in world.log()

    mark = world.fake.mark()
    world.fake.send_message("And Bari?", user_id=USER)
    edit = await world.fake.wait_for("editMessageText", lambda c: c.ok and c.params.get("text") == PRIMARY_REPLY,
                                     after=mark)
    first = world.calls("sendMessage", after=mark)[0]
    assert first.ok and PRIMARY_REPLY.startswith(first.params["text"]), "a partial message, then edited"
    assert edit.params["message_id"] == first.result["message_id"]
    assert world.calls("sendMessageDraft", after=mark) == [], "decided once, remembered"
    assert (await world.history())[-1] == {"role": "assistant", "text": PRIMARY_REPLY}
    world.transcript("Drafts refused by the server: one message, edited", after=mark)


async def test_edits_refused_too_typing_and_one_final_message(world: World) -> None:
    world.fake.refuse("editMessageText", error_code=400, description="Bad Request: message can't be edited")
    mark = world.fake.mark()
    world.fake.send_message("And Palermo?", user_id=USER)
    final = await world.says(USER, PRIMARY_REPLY, after=mark)
    assert "📝 editMessageText refused in private chats" in world.log()
    partial = world.calls("sendMessage", after=mark)[0]
    assert partial.index < final.index and world.fake.is_deleted(USER, partial.result["message_id"]), \
        "the partial message that could not be edited is removed"

    mark = world.fake.mark()
    world.fake.send_message("And Catania?", user_id=USER)
    await world.says(USER, PRIMARY_REPLY, after=mark)
    sent = [c.params["text"] for c in world.calls("sendMessage", after=mark)]
    assert sent == [PRIMARY_REPLY], "no partial message: one final message"
    assert world.calls("sendMessageDraft", after=mark) == world.calls("editMessageText", after=mark) == []
    assert world.log().count("refused in private chats") == 2, "one log line per decision"
    world.fake.accept("sendMessageDraft")
    world.fake.accept("editMessageText")


async def test_no_traceback_in_the_log(world: World) -> None:
    log = world.log()
    assert "Traceback" not in log, log[-4000:]
    assert "Task exception was never retrieved" not in log
    assert OPENAI_KEY not in log and TOKEN.split(":")[1] not in log

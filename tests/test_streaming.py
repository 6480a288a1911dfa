"""Streamed replies, in process: the preview's pacing, the restart rule, Stop across processes,
STREAMING=off, and "typing…" that fails quietly.

The app is the real one (`build_app`) with its Bot pointed at a FakeTelegram on 127.0.0.1 and
its providers at two FakeLLM servers; updates go through `Dispatcher.feed_update`. The preview
and restart tests drive the parts directly, with an injected clock and in-process models.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import ClientDecodeError, TelegramBadRequest, TelegramNotFound, TelegramRetryAfter
from aiogram.methods import SendMessageDraft
from aiogram.types import Message, Update
from pydantic_ai import Agent, Tool
from pydantic_ai.exceptions import ModelConnectionError
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from luka_bot.core.config import ConfigError, load_settings
from luka_bot.core.loader import App, build_app
from luka_bot.services.llm_provider_fallback import set_llm_provider_fallback
from luka_bot.services.message_text import TELEGRAM_LIMIT, Rendered, split_text
from luka_bot.services.state_stores import build_stores
from luka_bot.services.streaming import (
    Generations,
    PreviewMode,
    ReplyStopped,
    ReplyStreaming,
    SideEffectsRan,
    StreamCapabilities,
)
from luka_bot.services.streaming.capabilities import is_refusal
from luka_bot.services.streaming.frames import EditFrames, visible_tail
from luka_bot.services.streaming.preview import Preview
from luka_bot.services.streaming.reply import stream_reply
from plugins.llm_fallback import (
    AllProvidersFailedError,
    FailureKind,
    LLMFallbackModel,
    LLMProviderFallback,
    MemoryStateStore,
)
from tests.conftest import FakeClock, provider_specs, wait_until
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_telegram import FakeTelegram

USER = 2101
_update_ids = itertools.count(1)


# --- the app, in process, against FakeTelegram ----------------------------------------------------


@dataclass
class Env:
    app: App
    fake: FakeTelegram
    primary: FakeLLM

    async def say(self, text: str, user_id: int = USER) -> dict[str, Any]:
        message = self.fake.send_message(text, user_id=user_id)
        await self.app.dp.feed_update(self.app.bot, Update.model_validate({"update_id": next(_update_ids),
                                                                           "message": message}))
        return message

    def texts(self, method: str = "sendMessage") -> list[str]:
        return [c.params.get("text", "") for c in self.fake.calls_of(method) if c.ok]


@pytest_asyncio.fixture
async def make_app() -> AsyncIterator[Callable[..., Awaitable[Env]]]:
    built: list[Env] = []
    async with FakeTelegram() as fake, FakeLLM("ollama") as primary, FakeLLM("openai") as fallback:

        async def build(**overrides: Any) -> Env:
            settings = load_settings(
                _env_file=None, BOT_TOKEN=fake.token, ADMIN_IDS=[], REDIS_URL=None, TELEGRAM_API_URL=fake.url,
                OLLAMA_URL=primary.url, OLLAMA_MODEL_NAME=None, OPENAI_MODEL_NAME=None, OPENAI_API_KEY="sk-test",
                OPENAI_BASE_URL=fallback.v1_url, AVAILABLE_PROVIDERS={"ollama": ["m1"], "openai": ["g1"]},
                OLLAMA_TIMEOUT=5, OPENAI_TIMEOUT=5, LLM_CONNECT_TIMEOUT=1, DEFAULT_LANGUAGE="en", **overrides)
            bot = Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.url)))
            env = Env(build_app(settings, bot=bot), fake, primary)
            built.append(env)
            return env

        yield build
        for env in built:
            await env.app.fallback.aclose()
            await env.app.bot_store.close()
            await env.app.bot.session.close()
    set_llm_provider_fallback(None)


async def test_streaming_off_is_typing_then_one_message(make_app: Callable[..., Awaitable[Env]]) -> None:
    env = await make_app(STREAMING="off")
    await env.say("/new")
    await env.say("hello")
    assert env.texts()[-1] == "answer from ollama"
    assert env.fake.calls_of("sendMessageDraft") == [] and env.fake.calls_of("editMessageText") == []
    assert env.fake.calls_of("sendChatAction"), "typing… while the model works"


@pytest.mark.parametrize("streaming", ["on", "off"])
@pytest.mark.parametrize(("markdown", "text", "entities"), [
    ("on", "Use bold and code", [("bold", 4, 4), ("code", 13, 4)]),
    ("off", "Use **bold** and `code`", None),  # exactly as the model wrote it
])
async def test_the_answer_is_formatted_unless_markdown_is_off(
    make_app: Callable[..., Awaitable[Env]], streaming: str, markdown: str, text: str, entities: Any,
) -> None:
    env = await make_app(STREAMING=streaming, MARKDOWN=markdown)
    env.primary.reply = "Use **bold** and `code`"
    await env.say("/new")
    await env.say("hello")
    (answer,) = [c for c in env.fake.calls_of("sendMessage") if c.params.get("text") == text]
    assert "parse_mode" not in answer.params
    got = answer.params.get("entities")
    assert ([(e["type"], e["offset"], e["length"]) for e in got] if got else None) == entities


async def test_a_reply_complete_before_the_first_frame_needs_no_draft(make_app: Callable[..., Awaitable[Env]]) -> None:
    env = await make_app()  # FakeLLM streams its whole reply in a few ms: less than FIRST_FRAME_DELAY
    await env.say("/new")
    await env.say("hello")
    assert env.texts()[-1] == "answer from ollama"
    assert env.fake.calls_of("sendMessageDraft") == [], "no draft call that the message replaces at once"


async def test_a_failing_typing_indicator_leaves_no_unretrieved_task(
    make_app: Callable[..., Awaitable[Env]], caplog: pytest.LogCaptureFixture,
) -> None:
    env = await make_app()
    env.fake.refuse("sendChatAction", error_code=400, description="Bad Request: not enough rights")
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    caplog.set_level(logging.INFO)
    try:
        await env.say("/new")
        await env.say("hello")
        await env.say("and again")
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [c.get("message") for c in unretrieved] == []
    assert env.texts()[-1] == "answer from ollama", "the reply goes on without the indicator"
    lines = [r.getMessage() for r in caplog.records if "typing indicator stopped" in r.getMessage()]
    assert len(lines) == 2 and "not enough rights" in lines[0], "one line per reply, no traceback"


# --- the preview: pacing, flood control, refusals --------------------------------------------------


class RecordingFrames:
    mode = PreviewMode.DRAFT

    def __init__(self, clock: FakeClock, errors: list[Exception] | None = None):
        self.clock = clock
        self.errors = errors or []
        self.sent: list[tuple[float, str]] = []

    async def send(self, text: str) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((self.clock.now, text))

    async def finish(self, chunks: list[str]) -> list[str]:
        return chunks

    async def discard(self) -> None:
        return None


def paced_preview(frames: RecordingFrames, clock: FakeClock, interval: float = 1.0,
                  on_refused: Any = None) -> tuple[Preview, list[float]]:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    preview = Preview(frames, interval, on_refused=on_refused or (lambda f, e: None), clock=clock, sleep=sleep)
    return preview, sleeps


def retry_after(seconds: int) -> TelegramRetryAfter:
    method = SendMessageDraft(chat_id=1, draft_id=1, text="x")
    return TelegramRetryAfter(method=method, message=f"Too Many Requests: retry after {seconds}",
                              retry_after=seconds)


async def test_frames_come_at_most_once_per_interval_with_the_newest_text(clock: FakeClock) -> None:
    frames = RecordingFrames(clock)
    preview, sleeps = paced_preview(frames, clock, interval=1.0)
    started = clock.now
    preview.append("a")
    await wait_until(lambda: len(frames.sent) == 1)
    assert frames.sent[0][0] - started == pytest.approx(0.25), "the first frame waits FIRST_FRAME_DELAY"
    for word in ("b", "c", "d"):  # faster than the interval: only the newest text is shown next
        preview.append(word)
    await wait_until(lambda: len(frames.sent) == 2)
    await preview.close()
    assert [text for _, text in frames.sent] == ["a", "abcd"]
    assert frames.sent[1][0] - frames.sent[0][0] >= 1.0 and sleeps, "the second frame waited the interval"


async def test_flood_control_pauses_frames_and_close_does_not_wait_for_the_pause(clock: FakeClock) -> None:
    frames = RecordingFrames(clock, errors=[retry_after(30)])
    gate = asyncio.Event()
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:  # a real pause: only ends when the test says so
        pauses.append(seconds)
        await gate.wait()

    preview = Preview(frames, 1.0, on_refused=lambda f, e: None, first_delay=0, clock=clock, sleep=sleep)
    preview.append("hello")
    await wait_until(lambda: pauses == [30])  # the 429 was honoured: the next frame waits 30 s
    preview.append(" world")
    await asyncio.wait_for(preview.close(), timeout=1.0)  # the reply does not wait for the pause
    assert frames.sent == [], "no frame inside the pause"


async def test_a_refused_method_moves_down_once_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    capabilities = StreamCapabilities()
    caplog.set_level(logging.WARNING)
    refusal = TelegramNotFound(method=SendMessageDraft(chat_id=1, draft_id=1), message="Not Found: method not found")
    assert capabilities.mode_for("private") is PreviewMode.DRAFT
    assert capabilities.mode_for("supergroup") is PreviewMode.EDIT, "no drafts outside private chats"
    assert capabilities.refused("private", PreviewMode.DRAFT, refusal) is PreviewMode.EDIT
    assert capabilities.refused("private", PreviewMode.DRAFT, refusal) is PreviewMode.EDIT  # a concurrent reply
    assert capabilities.mode_for("private") is PreviewMode.EDIT
    edit_refused = TelegramBadRequest(method=SendMessageDraft(chat_id=1, draft_id=1),
                                      message="Bad Request: message can't be edited")
    assert capabilities.refused("private", PreviewMode.EDIT, edit_refused) is PreviewMode.NONE
    lines = [r.getMessage() for r in caplog.records if "refused in private chats" in r.getMessage()]
    assert len(lines) == 2 and "method not found" in lines[0], lines


async def test_an_answer_that_is_not_the_bot_apis_is_a_refusal_logged_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    page = "<html>\n<head><title>404 Not Found</title></head>\n<body>nginx</body>\n</html>"
    error = ClientDecodeError("Failed to decode object", ValueError("Expecting value"), page)
    capabilities = StreamCapabilities()
    caplog.set_level(logging.WARNING)
    assert is_refusal(error)
    assert capabilities.refused("private", PreviewMode.DRAFT, error) is PreviewMode.EDIT
    assert capabilities.mode_for("private") is PreviewMode.EDIT, "remembered: the next reply does not try drafts"
    (line,) = [r.getMessage() for r in caplog.records]
    assert "not a Bot API answer: '<html> <head><title>404 Not Found</title></head> <body>nginx" in line
    assert "\n" not in line


async def test_a_chat_specific_bad_request_is_not_a_refusal(clock: FakeClock) -> None:
    not_modified = TelegramBadRequest(method=SendMessageDraft(chat_id=1, draft_id=1),
                                      message="Bad Request: message is not modified")
    frames = RecordingFrames(clock, errors=[not_modified])
    refused: list[Exception] = []
    preview, _ = paced_preview(frames, clock, on_refused=lambda f, e: refused.append(e) or f)
    preview.append("a")
    await wait_until(lambda: frames.errors == [])
    preview.append("b")
    await wait_until(lambda: frames.sent != [])
    await preview.close()
    assert refused == [] and frames.sent == [(frames.sent[0][0], "ab")], "the frame is lost, not the mode"


# --- the restart rule: side effects --------------------------------------------------------------


def _tool_returned(messages: list[ModelMessage]) -> bool:
    return any(isinstance(p, ToolReturnPart) for m in messages if isinstance(m, ModelRequest) for p in m.parts)


def _provider(name: str, *, cuts: bool, calls: list[str]) -> FunctionModel:
    """Calls the tool `book_table` first; then answers, and (`cuts`) breaks off after its first words."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        calls.append(name)
        if not _tool_returned(messages):
            yield {0: DeltaToolCall(name="book_table", json_args="{}", tool_call_id="call-1")}
            return
        yield f"{name}: booked"
        if cuts:
            raise ModelConnectionError(name, "Connection reset by peer", phase="read")
        yield ", see you at eight."

    return FunctionModel(stream_function=stream, model_name=name)


@pytest.fixture
def booking(clock: FakeClock) -> tuple[Agent[None, str], list[str], list[str]]:
    calls: list[str] = []
    booked: list[str] = []
    models = {"ollama": {"m1": _provider("ollama", cuts=True, calls=calls)},
              "openai": {"g1": _provider("openai", cuts=False, calls=calls),
                         "g2": _provider("openai", cuts=False, calls=calls)}}
    engine = LLMProviderFallback(provider_specs(), MemoryStateStore(clock), clock=clock, models=models)

    def book_table() -> str:
        """Book a table."""
        booked.append("table")
        return "booked"

    agent = Agent(LLMFallbackModel(engine), tools=[Tool(book_table, metadata={"side_effects": True})])
    return agent, calls, booked


async def test_a_cut_after_a_side_effecting_tool_is_not_restarted(
    booking: tuple[Agent[None, str], list[str], list[str]], clock: FakeClock,
) -> None:
    agent, calls, booked = booking
    preview, _ = paced_preview(RecordingFrames(clock), clock)
    with pytest.raises(SideEffectsRan):
        await stream_reply(agent, "book me a table", [], preview, token=None, attempts=2,
                           has_side_effects=lambda name: name == "book_table")
    await preview.close()
    assert booked == ["table"], "the table is booked once, not twice"
    assert "openai" not in calls


async def test_a_cut_after_a_pure_tool_is_restarted_on_the_next_provider(
    booking: tuple[Agent[None, str], list[str], list[str]], clock: FakeClock,
) -> None:
    agent, calls, _ = booking
    preview, _ = paced_preview(RecordingFrames(clock), clock)
    answer = await stream_reply(agent, "book me a table", [], preview, token=None,
                                attempts=2, has_side_effects=lambda name: False)
    await preview.close()
    assert answer == "openai: booked, see you at eight."
    assert calls[0] == "ollama" and calls[-1] == "openai"


async def test_restarts_are_bounded_by_the_number_of_attempts(
    booking: tuple[Agent[None, str], list[str], list[str]], clock: FakeClock,
) -> None:
    agent, calls, _ = booking
    preview, _ = paced_preview(RecordingFrames(clock), clock)
    with pytest.raises(AllProvidersFailedError) as failed:  # reported as "all failed": admins hear of it
        await stream_reply(agent, "book me a table", [], preview, token=None,
                           attempts=1, has_side_effects=lambda name: False)
    await preview.close()
    assert "openai" not in calls
    assert [a.kind for a in failed.value.attempts] == [FailureKind.STREAM_CUT]


async def test_stop_keeps_the_partial_text_and_blames_no_provider(make_env: Callable[..., Any], clock: FakeClock) -> None:
    env = make_env()
    hold = asyncio.Event()
    calls: list[str] = []

    async def slow(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        calls.append("ollama")
        yield "Once upon "
        await hold.wait()
        yield "a time."

    env.engine.models["ollama"]["m1"] = FunctionModel(stream_function=slow, model_name="ollama-m1")
    generations = Generations()
    preview, _ = paced_preview(RecordingFrames(clock), clock)
    with generations.running(1, 9) as token:
        run = asyncio.create_task(stream_reply(Agent(LLMFallbackModel(env.engine)), "a story", [], preview,
                                               token=token, attempts=2, has_side_effects=lambda name: True))
        await wait_until(lambda: preview.text == "Once upon ")
        assert await generations.stop(1, 9) is True
        with pytest.raises(ReplyStopped) as stopped:
            await run
    await preview.close()
    assert stopped.value.partial == "Once upon " and calls == ["ollama"]
    assert env.fakes.count("openai") == 0, "a Stop is not a failure: nothing falls back"
    health = await env.health("ollama")
    assert health["state"] == "healthy" and health["cooldown_seconds_left"] == 0, health


# --- Stop across processes -----------------------------------------------------------------------


async def test_a_stop_received_by_another_process_stops_the_reply(redis_url: str) -> None:
    settings = load_settings(_env_file=None, BOT_TOKEN="4242:stop-test-token", REDIS_URL=redis_url)
    owner_stores, other_stores = build_stores(settings), build_stores(settings)  # two bot processes
    owner_store, other_store = owner_stores.bot, other_stores.bot
    owner, other = Generations(owner_store), Generations(other_store)
    try:
        with owner.running(7, 42) as token:
            watcher = asyncio.create_task(owner.watch(7, 42, token, interval=0.01))
            assert await other.stop(7, 42) is False, "not running in that process: published"
            await asyncio.wait_for(watcher, timeout=5)
            assert token.cancelled
        assert await other.stop(7, 43) is False and len(owner) == 0
    finally:
        await owner_stores.close()
        await other_stores.close()


# --- long replies and the fake's drafts --------------------------------------------------------------


def test_a_draft_of_a_long_reply_shows_its_last_chunk_within_the_limit() -> None:
    long_text = " ".join(f"word{i}" for i in range(2000))
    assert len(long_text) > 2 * TELEGRAM_LIMIT
    tail = visible_tail(Rendered(long_text))
    assert tail.text == split_text(long_text)[-1] and len(tail.text) <= TELEGRAM_LIMIT
    assert visible_tail(Rendered("short")) == Rendered("short") and visible_tail(Rendered("")) == Rendered("")


async def test_fake_drafts_follow_telegrams_rules() -> None:
    async with FakeTelegram() as fake:
        bot = Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.url)))
        try:
            fake.send_message("hi", user_id=USER)
            fake.send_message("hi", user_id=USER, chat_id=-100777, chat_type="supergroup")
            assert await bot.send_message_draft(chat_id=USER, draft_id=5, text="", can_stop=True) is True
            with pytest.raises(TelegramBadRequest):
                await bot.send_message_draft(chat_id=-100777, draft_id=5, text="x")  # private chats only
            with pytest.raises(TelegramBadRequest):
                await bot.send_message_draft(chat_id=USER, draft_id=0, text="x")
            with pytest.raises(TelegramBadRequest):
                await bot.send_message_draft(chat_id=USER, draft_id=5, text="x" * 4097)
            assert fake.draft_frames(USER) == [{**fake.draft_frames(USER)[0], "text": "", "can_stop": True}]
            with pytest.raises(ValueError, match="no draft 6"):
                fake.stop_generation(USER, 6)
            event = fake.stop_generation(USER, 5)
            assert fake.pending_updates[-1]["stopped_message_generation"] == event
            fake.refuse("sendMessageDraft")
            with pytest.raises(TelegramNotFound):
                await bot.send_message_draft(chat_id=USER, draft_id=5, text="x")
            fake.accept("sendMessageDraft")
            assert await bot.send_message_draft(chat_id=USER, draft_id=5, text="x") is True
        finally:
            await bot.session.close()


async def test_a_question_in_a_private_topic_is_streamed_into_that_topic() -> None:
    async with FakeTelegram() as fake:
        bot = Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.url)))
        try:
            raw = fake.send_message("hi", user_id=USER)
            question = Message.model_validate({**raw, "message_thread_id": 77, "is_topic_message": True})
            streaming = ReplyStreaming(interval=0.05)
            async with streaming.reply(bot, question) as reply:
                await reply.frames.send("partial")  # type: ignore[union-attr]
            (draft,) = fake.calls_of("sendMessageDraft")
            assert draft.params["message_thread_id"] == 77 and draft.params["draft_id"] == question.message_id
            edits = EditFrames(bot, USER, thread_id=77)
            await edits.send("partial")
            assert fake.calls_of("sendMessage")[-1].params["message_thread_id"] == 77
        finally:
            await bot.session.close()


@pytest.mark.parametrize(("overrides", "setting"), [({"STREAMING": "maybe"}, "STREAMING"),
                                                     ({"STREAM_DRAFT_INTERVAL": "0"}, "STREAM_DRAFT_INTERVAL"),
                                                     ({"STREAM_DRAFT_INTERVAL": "fast"}, "STREAM_DRAFT_INTERVAL")])
def test_bad_streaming_settings_are_refused_naming_the_setting(overrides: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        load_settings(_env_file=None, **overrides)


def test_streaming_settings_defaults_and_spelling() -> None:
    settings = load_settings(_env_file=None)
    assert (settings.STREAMING, settings.STREAM_DRAFT_INTERVAL) == ("on", 1.0)
    assert load_settings(_env_file=None, STREAMING=" OFF ").STREAMING == "off"


async def test_a_restart_after_a_cut_goes_to_another_provider_even_when_every_provider_cools(
        make_env: Callable[..., Any], clock: FakeClock) -> None:
    """Both providers failed once; now the primary cuts streams and the fallback is fine again: the
    restarted reply must not start on the primary a second time (it would cut again: an apology)."""
    from tests.conftest import http_error

    env = make_env()
    env.fakes.fail("ollama", lambda: http_error(500, "m1"))
    env.fakes.fail("openai", lambda: http_error(500, "g1"))
    with pytest.raises(Exception):  # noqa: PT011 - both down: all failed
        await env.ask()
    env.fakes.ok("ollama")
    env.fakes.ok("openai")
    env.fakes.cut_stream("ollama", lambda: ModelConnectionError("m1", "Connection reset by peer", phase="read"))
    assert (await env.health("ollama"))["state"] == "cooling" and (await env.health("openai"))["state"] == "cooling"

    preview, _ = paced_preview(RecordingFrames(clock), clock)
    answer = await stream_reply(Agent(LLMFallbackModel(env.engine)), "hi", [], preview, token=None, attempts=2,
                                has_side_effects=lambda name: False)
    await preview.close()
    assert answer == "openai/g1"
    assert env.fakes.log[-2:] == [("ollama", "m1"), ("openai", "g1")], "the restart went to openai, not ollama again"

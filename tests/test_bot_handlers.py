"""The bot's handlers and the plugin's middleware, in process, through `Dispatcher.feed_update`.

The app is the real one (`luka_bot.core.loader.build_app`): settings point the providers at two
`FakeLLM` servers on 127.0.0.1 (ollama = primary, openai = fallback), the state store is in
memory. The Bot's HTTP calls to api.telegram.org are intercepted by `aioresponses`: one regex
mock answers every Bot API method like Telegram would and records the decoded parameters;
`BotAPI.fail_next(...)` makes the next call of a method fail with a Telegram error (flood
control, "message is not modified", "message can't be deleted").
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from aiogram import Bot, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message, Update
from aiohttp import ClientResponse
from aioresponses import CallbackResult, aioresponses

from luka_bot.core.config import load_settings
from luka_bot.core.loader import App, build_app
from luka_bot.core.send_pacer import PacedSends, SendPacer
from luka_bot.handlers.replies import TELEGRAM_LIMIT
from luka_bot.services.llm_model_factory import LLMModelFactory
from luka_bot.services.llm_provider_fallback import set_llm_provider_fallback
from plugins.llm_fallback import LLMProviderFallback
from tests.conftest import FakeClock
from tests.fakes.fake_llm import FakeLLM

TOKEN = "42:TEST-handlers-token-not-real"
OPENAI_KEY = "sk-test-handlers-SECRET-987654321"
ADMIN = 5001
USER = 1001
GROUP = -100200300
BOT_USER = {"id": 42, "is_bot": True, "first_name": "Luka", "username": "luka_test_bot"}

API_URL = re.compile(r"^https://api\.telegram\.org/bot[^/]+/(?P<method>\w+)$")
JSON_FIELDS = {"reply_markup", "entities", "scope", "commands", "reply_parameters", "link_preview_options"}

USAGE_PREFIX = "Usage: /llm_force <provider> [seconds]"
REFUSAL = "⛔ This command is for the bot's admins only."
APOLOGY_EN = "😔 I can't answer right now, try again in a minute."
APOLOGY_RU = "😔 Сейчас не могу ответить, попробуйте через минуту."


# --- the Bot API, mocked with aioresponses ------------------------------------------------------------


class CompatResponse(ClientResponse):
    """aiohttp 3.14 made `stream_writer` a required argument of `ClientResponse`; aioresponses 0.7.9
    (the latest release) does not pass it (pnuckowski/aioresponses#289), so every mocked response
    fails with a TypeError. This subclass supplies a finished writer."""

    _NEEDS_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        if self._NEEDS_WRITER:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@dataclass
class ApiCall:
    method: str
    params: dict[str, Any]


def form_params(data: Any) -> dict[str, Any]:
    """The fields of the `aiohttp.FormData` aiogram posts, JSON fields decoded."""
    params: dict[str, Any] = {}
    for type_options, _headers, value in getattr(data, "_fields", []):
        name = type_options["name"]
        if name in JSON_FIELDS and isinstance(value, str):
            value = json.loads(value)
        params[name] = value
    return params


@dataclass
class BotAPI:
    """Answers every api.telegram.org call through one aioresponses regex mock; records them."""

    mocked: aioresponses
    calls: list[ApiCall] = field(default_factory=list)
    faults: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    chat_members: dict[tuple[int, int], str] = field(default_factory=dict)
    _message_ids: itertools.count = field(default_factory=lambda: itertools.count(500))

    def __post_init__(self) -> None:
        self.mocked.post(API_URL, callback=self._answer, repeat=True)

    def fail_next(self, method: str, error_code: int, description: str, retry_after: int | None = None) -> None:
        """The next call of `method` gets this Telegram error (as JSON, with the HTTP status)."""
        body: dict[str, Any] = {"ok": False, "error_code": error_code, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        self.faults[method].append((error_code, body))

    def of(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def sent(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Params of every sendMessage call (failed attempts included), oldest first."""
        return [c.params for c in self.of("sendMessage") if chat_id is None or int(c.params["chat_id"]) == chat_id]

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [p["text"] for p in self.sent(chat_id)]

    def _answer(self, url: Any, **kwargs: Any) -> CallbackResult:
        method = API_URL.match(str(url))["method"]  # type: ignore[index]
        params = form_params(kwargs.get("data"))
        self.calls.append(ApiCall(method, params))
        if self.faults.get(method):
            status, body = self.faults[method].pop(0)
            return CallbackResult(status=status, payload=body, response_class=CompatResponse)
        return CallbackResult(status=200, payload={"ok": True, "result": self._result(method, params)},
                              response_class=CompatResponse)

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return BOT_USER
        if method in {"sendMessage", "editMessageText"}:
            chat_id = int(params["chat_id"])
            message_id = int(params.get("message_id") or next(self._message_ids))
            chat = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
            if chat_id < 0:
                chat["title"] = "Test group"
            else:
                chat["first_name"] = "Test"
            return {"message_id": message_id, "date": int(time.time()), "chat": chat, "from": BOT_USER,
                    "text": params.get("text", "")}
        if method == "getChatMember":
            status = self.chat_members.get((int(params["chat_id"]), int(params["user_id"])), "member")
            member: dict[str, Any] = {"status": status,
                                      "user": {"id": int(params["user_id"]), "is_bot": False, "first_name": "U"}}
            if status == "creator":
                member["is_anonymous"] = False
            return member
        return True


# --- updates --------------------------------------------------------------------------------------


_update_ids = itertools.count(1)
_message_ids = itertools.count(1)


def user(user_id: int = USER, *, lang: str = "en", first_name: str = "Test") -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": lang}


def message_update(text: str, *, user_id: int = USER, lang: str = "en", chat_id: int | None = None,
                   first_name: str = "Test") -> Update:
    chat_id = user_id if chat_id is None else chat_id
    chat: dict[str, Any] = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
    if chat_id < 0:
        chat["title"] = "Test group"
    else:
        chat["first_name"] = first_name
    message: dict[str, Any] = {"message_id": next(_message_ids), "date": int(time.time()), "chat": chat,
                               "from": user(user_id, lang=lang, first_name=first_name), "text": text}
    if text.startswith("/"):
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return Update.model_validate({"update_id": next(_update_ids), "message": message})


def callback_update(data: str, *, user_id: int = USER, lang: str = "en", message_id: int = 77) -> Update:
    message = {"message_id": message_id, "date": int(time.time()),
               "chat": {"id": user_id, "type": "private", "first_name": "Test"}, "from": BOT_USER,
               "text": "🤖 LLM providers"}
    query = {"id": f"q{next(_update_ids)}", "from": user(user_id, lang=lang), "chat_instance": "1",
             "message": message, "data": data}
    return Update.model_validate({"update_id": next(_update_ids), "callback_query": query})


# --- the app under test -------------------------------------------------------------------------------


@dataclass
class Env:
    app: App
    api: BotAPI
    primary: FakeLLM
    fallback: FakeLLM
    sleeps: list[float]

    @property
    def engine(self) -> LLMProviderFallback:
        return self.app.fallback

    async def feed(self, update: Update) -> Any:
        return await self.app.dp.feed_update(self.app.bot, update)

    async def say(self, text: str, **kwargs: Any) -> Any:
        return await self.feed(message_update(text, **kwargs))

    async def press(self, data: str, **kwargs: Any) -> Any:
        return await self.feed(callback_update(data, **kwargs))

    async def state(self) -> tuple[Any, ...]:
        """The engine's shared state (force, preferred, cooldowns), without the read time."""
        snap = await self.engine.health.read()
        return snap.forced, snap.preferred, snap.failures, snap.model_failures


@pytest_asyncio.fixture
async def llms() -> AsyncIterator[tuple[FakeLLM, FakeLLM]]:
    async with FakeLLM("ollama") as primary, FakeLLM("openai") as fallback:
        yield primary, fallback


@pytest_asyncio.fixture
async def make_env(llms: tuple[FakeLLM, FakeLLM]) -> AsyncIterator[Callable[..., Awaitable[Env]]]:
    """Build the app; `parse_mode=` sets the Bot's default parse mode (to prove model text overrides it);
    `settings` are further settings."""
    primary, fallback = llms
    built: list[Env] = []
    with aioresponses() as mocked:
        api = BotAPI(mocked)

        async def build(*, parse_mode: str | None = None, redis_url: str | None = None, **settings: Any) -> Env:
            settings = load_settings(
                _env_file=None, BOT_TOKEN=TOKEN, ADMIN_IDS=[ADMIN], REDIS_URL=redis_url, TELEGRAM_API_URL=None,
                OLLAMA_URL=primary.url, OLLAMA_MODEL_NAME=None, OPENAI_MODEL_NAME=None,
                OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=fallback.v1_url,
                AVAILABLE_PROVIDERS={"ollama": ["m1"], "openai": ["g1"]},
                OLLAMA_TIMEOUT=5, OPENAI_TIMEOUT=5, LLM_CONNECT_TIMEOUT=1, DEFAULT_LANGUAGE="en", **settings,
            )
            sleeps: list[float] = []
            clock = FakeClock()

            async def no_wait(seconds: float) -> None:  # flood waits pass on the fake clock, at once
                sleeps.append(seconds)
                clock.advance(seconds)

            session = AiohttpSession()
            session.middleware(PacedSends(SendPacer(clock=clock, sleep=no_wait), clock=clock))
            bot = Bot(TOKEN, session=session, default=DefaultBotProperties(parse_mode=parse_mode))
            env = Env(build_app(settings, bot=bot), api, primary, fallback, sleeps)
            built.append(env)
            return env

        yield build
        for env in built:
            await env.app.fallback.aclose()
            await env.app.bot_store.close()
            await env.app.bot.session.close()
    set_llm_provider_fallback(None)


@pytest_asyncio.fixture
async def env(make_env: Callable[..., Awaitable[Env]]) -> Env:
    return await make_env()


# --- the plugin's middleware ------------------------------------------------------------------------


async def test_middleware_injects_models_and_fallback_into_handlers(env: Env) -> None:
    seen: list[tuple[str, Any, Any]] = []
    probe = Router(name="probe")

    @probe.message(Command("probe"))
    async def on_message(message: Message, llm_models: LLMModelFactory, llm_fallback: LLMProviderFallback) -> None:
        seen.append(("message", llm_models, llm_fallback))

    @probe.callback_query(lambda q: q.data == "probe")
    async def on_button(query: CallbackQuery, llm_models: LLMModelFactory, llm_fallback: LLMProviderFallback) -> None:
        seen.append(("callback", llm_models, llm_fallback))

    env.app.dp.include_router(probe)
    await env.say("/probe")
    await env.press("probe")

    assert [kind for kind, _, _ in seen] == ["message", "callback"]
    for _, models, fallback in seen:
        assert fallback is env.engine
        assert isinstance(models, LLMModelFactory)
        assert models.fallback is env.engine
    assert seen[0][1] is seen[1][1], "one factory for every update"


# --- conversations -----------------------------------------------------------------------------------


async def test_chat_answer_comes_from_the_primary_with_a_thread_name(env: Env) -> None:
    await env.say("hello there")
    assert env.api.texts(USER) == ["🧵 answer from ollama", "answer from ollama"]
    assert env.fallback.count() == 0
    assert any(c.params.get("action") == "typing" for c in env.api.of("sendChatAction"))


async def test_long_model_reply_is_split_into_messages_within_telegram_limit(env: Env) -> None:
    paragraph = " ".join(f"word{i}" for i in range(300))  # ~2.3k chars
    unbroken = "x" * 5000  # no whitespace at all: must be hard-cut
    long_reply = "\n\n".join([paragraph] * 4 + [unbroken, paragraph])
    assert len(long_reply) > 3 * TELEGRAM_LIMIT
    env.primary.reply = long_reply

    await env.say("tell me a long story")

    chunks = [t for t in env.api.texts(USER) if not t.startswith("🧵")]
    assert len(chunks) >= 3
    assert all(0 < len(chunk) <= TELEGRAM_LIMIT for chunk in chunks), [len(c) for c in chunks]
    assert re.sub(r"\s", "", "".join(chunks)) == re.sub(r"\s", "", long_reply), "nothing lost or reordered"
    name = next(t for t in env.api.texts(USER) if t.startswith("🧵"))
    assert len(name) <= TELEGRAM_LIMIT and len(name.removeprefix("🧵 ")) <= 40


async def test_model_text_with_markup_characters_is_sent_as_entities_never_a_parse_mode(
    make_env: Callable[..., Awaitable[Env]],
) -> None:
    env = await make_env(parse_mode="HTML")  # even with an HTML default, model text must not be parsed by Telegram
    env.primary.reply = "if a < b && c > d: use *stars*, _underscores_ and <unclosed <b>tags"

    await env.say("show me code")

    (answer,) = [p for p in env.api.sent(USER) if not p["text"].startswith("🧵")]
    assert answer["text"] == "if a < b && c > d: use stars, underscores and <unclosed <b>tags", "no character lost"
    assert [(e["type"], e["offset"], e["length"]) for e in answer["entities"]] == [("italic", 23, 5),
                                                                                    ("italic", 30, 11)]
    for params in env.api.sent(USER):
        assert "parse_mode" not in params, params


async def test_both_providers_down_the_user_gets_the_apology(env: Env) -> None:
    await env.primary.stop()
    await env.fallback.stop()
    await env.say("anyone?")  # no exception escapes the handler
    assert env.api.texts(USER) == [APOLOGY_EN]


async def test_russian_user_gets_russian_texts(env: Env) -> None:
    await env.say("/new", lang="ru")
    await env.say("/llm_clear", lang="ru")
    await env.primary.stop()
    await env.fallback.stop()
    await env.say("привет", lang="ru")
    assert env.api.texts(USER) == [
        "🧵 Новая ветка начата. О чём поговорим?",
        "⛔ Эта команда только для администраторов бота.",
        APOLOGY_RU,
    ]


async def test_admin_status_in_russian(env: Env) -> None:
    await env.say("/llm_status", user_id=ADMIN, lang="ru")
    (params,) = env.api.sent(ADMIN)
    assert params["text"].startswith("🤖 LLM-провайдеры")
    assert "1. ollama — ⚪ неизвестно: ещё не использовался и не проверялся" in params["text"]  # nothing asked yet
    assert "Хранилище состояния: память (этот процесс)" in params["text"]


# --- admin commands ----------------------------------------------------------------------------------


def buttons(params: dict[str, Any]) -> list[tuple[str, str]]:
    return [(b["text"], b["callback_data"]) for row in params["reply_markup"]["inline_keyboard"] for b in row]


async def test_status_lists_providers_in_order_with_health_and_the_keyboard(env: Env) -> None:
    await env.primary.stop()
    await env.say("hello")  # the primary fails, the fallback answers
    assert env.api.texts(USER)[-1] == "answer from openai"

    await env.say("/llm_status", user_id=ADMIN)
    (params,) = env.api.sent(ADMIN)
    text = params["text"]
    lines = text.splitlines()
    assert lines[0] == "🤖 LLM providers"
    assert lines[1].startswith("1. ollama — 🔴 cooling down, ")
    assert "(failures: 1)" in lines[1]
    assert lines[2].strip().startswith("last error ")
    assert lines[3].strip().startswith("next recovery probe in ")
    assert lines[4] == "2. openai — 🟢 healthy"
    assert "Preferred (cached): openai" in lines
    assert "Forced: none" in lines
    assert "State store: memory (this process)" in lines
    assert OPENAI_KEY not in text
    assert "parse_mode" not in params and params["entities"], "formatted with entities, not markup"

    assert [data for _, data in buttons(params)] == [
        "llmadm:force:ollama", "llmadm:force:openai", "llmadm:clear:", "llmadm:check:", "llmadm:refresh:",
    ]
    assert [label for label, _ in buttons(params)] == [
        "Force ollama 10 min", "Force openai 10 min", "🧹 Clear", "🔎 Check now", "🔄 Refresh",
    ]


async def test_admin_force_and_clear_change_the_state(env: Env) -> None:
    await env.say("/llm_force openai 600", user_id=ADMIN)
    stats = await env.engine.get_provider_stats()
    assert stats["forced_provider"] == "openai"
    assert 590 <= stats["forced_seconds_left"] <= 600
    assert env.api.texts(ADMIN)[-1].startswith("✅ openai forced for 10m 0s (until ")

    await env.say("hi")
    assert env.api.texts(USER)[-1] == "answer from openai"
    assert env.primary.count() == 0

    await env.say("/llm_clear", user_id=ADMIN)
    assert env.api.texts(ADMIN)[-1] == (
        "🧹 Cleared. Preferred provider: openai; forced provider: openai; cooldowns: none.")
    assert (await env.engine.get_provider_stats())["forced_provider"] is None


async def _make_state_worth_keeping(env: Env) -> None:
    """A cooldown, a preferred provider and a force, so that any change would show."""
    await env.primary.stop()
    await env.say("hello")
    await env.engine.force_provider("openai", 900)
    forced, preferred, failures, _ = await env.state()
    assert forced is not None and preferred is not None and failures["ollama"] is not None


@pytest.mark.parametrize("command", ["/llm_force openai 600", "/llm_force ollama", "/llm_clear", "/llm_status"])
async def test_non_admin_gets_a_refusal_and_nothing_changes(env: Env, command: str) -> None:
    await _make_state_worth_keeping(env)
    before = await env.state()
    sent_before = len(env.api.sent())

    await env.say(command, user_id=USER)

    assert env.api.texts()[sent_before:] == [REFUSAL]
    assert await env.state() == before


@pytest.mark.parametrize("command", [
    "/llm_force",
    "/llm_force nosuch",
    "/llm_force openai abc",
    "/llm_force openai 0",
    "/llm_force openai -5",
    "/llm_force openai 999999",
    "/llm_force openai 9",
    "/llm_force openai 600 extra",
    "/llm_force openai 1.5",
])
async def test_admin_bad_force_arguments_get_usage_and_change_nothing(env: Env, command: str) -> None:
    before = await env.state()
    await env.say(command, user_id=ADMIN)
    (reply,) = env.api.texts(ADMIN)
    assert reply.startswith(USAGE_PREFIX), reply
    assert "Providers: ollama, openai" in reply
    assert await env.state() == before


async def test_admin_clear_with_arguments_gets_usage_and_changes_nothing(env: Env) -> None:
    await _make_state_worth_keeping(env)
    before = await env.state()
    await env.say("/llm_clear everything", user_id=ADMIN)
    assert env.api.texts(ADMIN) == ["Usage: /llm_clear (no arguments)."]
    assert await env.state() == before


async def test_forged_force_button_from_a_non_admin_changes_nothing(env: Env) -> None:
    before = await env.state()
    await env.press("llmadm:force:openai", user_id=USER)
    await env.press("llmadm:clear:", user_id=USER)
    assert await env.state() == before
    answers = env.api.of("answerCallbackQuery")
    assert [a.params.get("text") for a in answers] == [REFUSAL, REFUSAL]
    assert all(a.params.get("show_alert") in (True, "true") for a in answers)
    assert env.api.of("editMessageText") == []


async def test_admin_button_for_an_unknown_provider_changes_nothing(env: Env) -> None:
    before = await env.state()
    await env.press("llmadm:force:nosuch", user_id=ADMIN)
    await env.press("llmadm:explode:", user_id=ADMIN)
    assert await env.state() == before
    assert [a.params.get("text") for a in env.api.of("answerCallbackQuery")] == ["Unknown action.", "Unknown action."]
    assert env.api.of("editMessageText") == []


async def test_admin_force_button_forces_for_ten_minutes_and_refreshes_in_place(env: Env) -> None:
    await env.press("llmadm:force:openai", user_id=ADMIN, message_id=88)
    stats = await env.engine.get_provider_stats()
    assert stats["forced_provider"] == "openai" and 590 <= stats["forced_seconds_left"] <= 600
    (edit,) = env.api.of("editMessageText")
    assert int(edit.params["message_id"]) == 88
    assert "Forced: openai, 10m 0s left" in edit.params["text"] or "Forced: openai, 9m" in edit.params["text"]
    (answer,) = env.api.of("answerCallbackQuery")
    assert answer.params["text"] == "openai forced for 10m 0s"


async def test_admin_check_button_probes_providers_and_shows_the_result(env: Env) -> None:
    await env.primary.stop()
    await env.press("llmadm:check:", user_id=ADMIN)
    (answer,) = env.api.of("answerCallbackQuery")
    note = answer.params["text"]
    assert note.startswith("ollama: ") and not note.startswith("ollama: OK"), note
    assert note.endswith("openai: OK"), note
    assert OPENAI_KEY not in note and len(note) <= 200
    (edit,) = env.api.of("editMessageText")
    assert "1. ollama — 🔴 cooling down" in edit.params["text"]
    # A check is a real 1-token chat completion per provider (a cheap endpoint proves nothing).
    assert env.fallback.count() == 1


# --- Telegram's own errors ----------------------------------------------------------------------------


async def test_flood_control_waits_retry_after_and_retries(env: Env) -> None:
    env.api.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    await env.say("/start")

    attempts = env.api.sent(USER)
    assert len(attempts) == 2
    assert attempts[0]["text"] == attempts[1]["text"] and attempts[0]["text"].startswith("👋 Hi! I'm Luka.")
    assert env.sleeps == [1]
    send_urls = [key for key in env.api.mocked.requests if key[1].path.endswith("/sendMessage")]
    assert sum(len(env.api.mocked.requests[key]) for key in send_urls) == 2


async def test_flood_control_is_retried_until_the_answer_is_delivered(env: Env) -> None:
    for _ in range(3):
        env.api.fail_next("sendMessage", 429, "Too Many Requests: retry after 2", retry_after=2)
    await env.say("/start")
    attempts = env.api.sent(USER)
    assert len(attempts) == 4 and len({a["text"] for a in attempts}) == 1
    assert env.sleeps == [2, 2, 2]


async def test_an_answer_that_cannot_be_delivered_in_time_is_one_error_line(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.api.fail_next("sendMessage", 429, "Too Many Requests: retry after 3600", retry_after=3600)
    with caplog.at_level(logging.WARNING):
        await env.say("/start")  # no exception reaches the dispatcher's log
    assert len(env.api.sent(USER)) == 1
    assert env.sleeps == [], "an hour is beyond TELEGRAM_SEND_DEADLINE: not waited for"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"❌ Telegram flood control: SendMessage to chat {USER} not delivered within 300s (retry after 3600s); "
        "given up"], caplog.text
    assert all(r.exc_info is None for r in caplog.records), "no traceback"


async def test_refresh_not_modified_is_ignored_and_the_button_answered(env: Env) -> None:
    env.api.fail_next(
        "editMessageText", 400,
        "Bad Request: message is not modified: specified new message content and reply markup are exactly "
        "the same as a current content and reply markup of a message",
    )
    await env.press("llmadm:refresh:", user_id=ADMIN)  # must not raise
    assert len(env.api.of("editMessageText")) == 1
    (answer,) = env.api.of("answerCallbackQuery")
    assert answer.params.get("show_alert") in (None, False, "false")


async def test_refresh_other_bad_request_is_not_swallowed(env: Env) -> None:
    """Only "not modified" is ignored: other edit errors still surface (to aiogram's error logging)."""
    from aiogram.exceptions import TelegramBadRequest

    env.api.fail_next("editMessageText", 400, "Bad Request: message to edit not found")
    with pytest.raises(TelegramBadRequest):
        await env.press("llmadm:refresh:", user_id=ADMIN)


async def _moderation_on(env: Env) -> None:
    env.api.chat_members[(GROUP, USER)] = "creator"
    await env.say("/moderation on", user_id=USER, chat_id=GROUP)
    assert env.api.texts(GROUP) == ["🛡 Moderation is on in this group."]


async def test_moderation_deletes_a_message_and_posts_a_notice(env: Env) -> None:
    await _moderation_on(env)
    env.primary.reply = '{"action": "delete", "reason": "**spam** with `links`"}'
    await env.say("BUY CHEAP PILLS http://spam.example", user_id=2002, chat_id=GROUP, first_name="Spammer")
    (delete,) = env.api.of("deleteMessage")
    assert int(delete.params["chat_id"]) == GROUP
    assert env.api.texts(GROUP)[-1] == "🛡 A message from Spammer was removed: **spam** with `links`", \
        "a moderation notice stays plain, the model's reason as written"
    notice = env.api.sent(GROUP)[-1]
    assert notice.get("parse_mode") is None and "entities" not in notice


async def test_moderation_cannot_delete_logs_and_skips(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    await _moderation_on(env)
    env.primary.reply = '{"action": "delete", "reason": "spam"}'
    env.api.fail_next("deleteMessage", 400, "Bad Request: message can't be deleted")
    caplog.set_level(logging.WARNING)

    await env.say("BUY CHEAP PILLS http://spam.example", user_id=2002, chat_id=GROUP, first_name="Spammer")

    assert len(env.api.of("deleteMessage")) == 1
    assert env.api.texts(GROUP) == ["🛡 Moderation is on in this group."], "no removal notice"
    assert any("could not delete message" in r.getMessage() and "can't be deleted" in r.getMessage()
               for r in caplog.records)


async def test_moderation_fails_open_when_no_provider_can_judge(env: Env) -> None:
    await _moderation_on(env)
    await env.primary.stop()
    await env.fallback.stop()
    await env.say("a perfectly normal message", user_id=2002, chat_id=GROUP)
    assert env.api.of("deleteMessage") == []
    assert env.api.texts(GROUP) == ["🛡 Moderation is on in this group."]


async def test_moderation_switch_is_for_group_admins_only(env: Env) -> None:
    await env.say("/moderation on", user_id=2002, chat_id=GROUP)
    env.primary.reply = '{"action": "delete", "reason": "spam"}'
    await env.say("spam spam", user_id=2003, chat_id=GROUP)
    assert env.api.texts(GROUP) == ["⛔ Only the group's admins can switch moderation."]
    assert env.api.of("deleteMessage") == []


async def test_apology_path_retrieves_the_thread_name_task_outcome(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import gc

    import luka_bot.handlers.chat as chat_module

    async def name_task_that_outlives_cancel(*args: Any, **kwargs: Any) -> str:
        """Like a real name task whose cancel lands during a Redis command: redis-py 8.1 loses the cancel."""
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass
        raise RuntimeError("every provider failed while naming the thread")

    monkeypatch.setattr(chat_module, "generate_thread_name", name_task_that_outlives_cancel)
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        await env.primary.stop()
        await env.fallback.stop()
        await env.say("first message of a new thread")
        assert env.api.texts(USER) == [APOLOGY_EN]
        await asyncio.sleep(0.2)  # the name task ends
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [c.get("message") for c in unretrieved] == []



# --- what a thread name, a cut-off answer and a refusal do to the reply -------------------------------------


def _names_thread(body: dict[str, Any]) -> bool:
    return any("You name conversation threads" in str(m.get("content")) for m in body.get("messages", []))


async def test_a_slow_thread_name_does_not_hold_back_the_answer(env: Env) -> None:
    import asyncio

    release = asyncio.Event()
    env.primary.hold_request = lambda body: release.wait() if _names_thread(body) else None
    started = asyncio.get_running_loop().time()
    await env.say("hello there")
    waited = asyncio.get_running_loop().time() - started
    assert env.api.texts(USER) == ["answer from ollama"], "the answer went out without waiting for its name"
    assert waited < 3, f"{waited:.1f}s: the answer waited for the name"
    release.set()
    for _ in range(200):  # the late name names the thread quietly
        if (threads := await env.app.dp["conversations"].threads(USER)):
            break
        await asyncio.sleep(0.01)
    assert [t.name for t in threads] == ["answer from ollama"]
    assert env.api.texts(USER) == ["answer from ollama"], "no late 🧵 message after the answer"


async def test_a_message_in_a_new_thread_counts_once_when_every_provider_is_down(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    events: list[Any] = []
    env.engine.add_listener(events.append)
    await env.primary.stop()
    await env.fallback.stop()
    with caplog.at_level(logging.INFO):
        await env.say("first message of a new thread")
    assert env.api.texts(USER) == [APOLOGY_EN]
    all_failed = [r for r in caplog.records if "All LLM providers failed" in r.getMessage()]
    assert len(all_failed) == 1 and all_failed[0].levelno == logging.ERROR
    assert len([e for e in events if getattr(e, "kind", None) == "all_failed"]) == 1
    assert any("No LLM provider could answer [thread_name]" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records)


async def test_an_answer_cut_at_the_length_limit_is_marked_and_kept_out_of_the_history(env: Env) -> None:
    env.primary.finish_reason = "length"
    await env.say("tell me everything")
    texts = env.api.texts(USER)
    assert texts[-1].startswith("answer from ollama") and "✂️ The answer was cut off here" in texts[-1]
    conversations = env.app.dp["conversations"]
    thread = await conversations.current_thread(USER)
    assert await conversations.history(USER, thread) == [], "a cut-off answer is not replayed to the model"


async def test_a_content_filter_error_from_the_provider_is_shown_as_a_refusal(env: Env) -> None:
    env.primary.mode = "content_filter"  # HTTP 400, error code content_filter: the prompt was filtered
    await env.say("something the filter stops")
    assert env.api.texts(USER)[-1] == "🙅 The model declined to answer that. Try asking differently."
    assert env.fallback.count() == 0, "a safety refusal is never routed around"


async def test_content_filter_refusals_never_cool_the_provider(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(USER_RATE_LIMIT=0)  # four messages in a row: past the per-user burst
    env.primary.reply, env.primary.finish_reason = "", "content_filter"  # llmock's shape: no text, the filter's stop
    for n in range(4):
        await env.say(f"something the filter stops, take {n}")
        assert env.api.texts(USER)[-1] == "🙅 The model declined to answer that. Try asking differently."
    _, _, failures, _ = await env.state()
    assert failures.get("ollama") is None, "a refusal is the model's answer, not the provider's failure"


async def test_a_content_filter_refusal_is_shown_as_one_and_not_stored(env: Env) -> None:
    env.primary.finish_reason = "content_filter"
    await env.say("something the filter stops")
    assert env.api.texts(USER)[-1] == "🙅 The model declined to answer that. Try asking differently."
    assert env.fallback.count() == 0, "a safety refusal is never routed around"
    conversations = env.app.dp["conversations"]
    assert await conversations.history(USER, await conversations.current_thread(USER)) == []

"""Admin commands and buttons under odd input: exactly one reply, the documented effect or nothing.

The real app through `Dispatcher.feed_update` (the Bot API mocked with aioresponses, providers
are `FakeLLM` servers on 127.0.0.1: see tests/test_bot_handlers.py). First the cases found by
hand (non-ASCII digits, callback data that does not parse, admin commands in a group), then
hypothesis over `/llm_force` / `/llm_status` / `/llm_clear` arguments and callback data strings,
from an admin and from a non-admin, in a private chat and in a group.
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import pytest
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import Update
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins.llm_fallback.alerts import AdminAlerts
from plugins.llm_fallback import MAX_FORCE_SECONDS, MIN_FORCE_SECONDS
from tests import test_bot_handlers as handlers
from tests.test_bot_handlers import ADMIN, BOT_USER, GROUP, REFUSAL, USAGE_PREFIX, USER, Env, callback_update, user

# The bot under test, built like in test_bot_handlers (fixtures shared by assignment).
llms, make_env, env = handlers.llms, handlers.make_env, handlers.env

PRIVATE_ONLY = "🔒 LLM admin commands work only in a private chat with the bot."
UNKNOWN_ACTION = "Unknown action."
PROVIDERS = ("ollama", "openai")
_ids = itertools.count(900_000)


def group_callback_update(data: str, *, user_id: int) -> Update:
    message = {"message_id": 91, "date": int(time.time()), "chat": {"id": GROUP, "type": "supergroup",
                                                                     "title": "Test group"},
               "from": BOT_USER, "text": "🤖 LLM providers"}
    query = {"id": f"g{next(_ids)}", "from": user(user_id), "chat_instance": "2", "message": message, "data": data}
    return Update.model_validate({"update_id": next(_ids), "callback_query": query})


async def _state_worth_keeping(env: Env) -> tuple[Any, ...]:
    """A force, a preferred provider and a cooldown, so that any change would show."""
    await env.engine.store.clear()
    await env.engine.report_provider_failure("ollama", ConnectionError("refused"))
    await env.engine.report_provider_success("openai")
    await env.engine.force_provider("openai", 900)
    env.api.calls.clear()
    state = await env.state()
    assert state[0] is not None and state[1] is not None and state[2]["ollama"] is not None
    return state


def _is_cleared(state: tuple[Any, ...]) -> bool:
    forced, preferred, failures, model_failures = state
    return forced is None and preferred is None and not any(failures.values()) and not any(model_failures.values())


def _answers(env: Env) -> list[dict[str, Any]]:
    return [c.params for c in env.api.of("answerCallbackQuery")]


# --- found by hand --------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", ["²", "¹", "①", "６００", "٦٠٠", "𝟔𝟎𝟎", "6⁰0"])
async def test_force_with_non_ascii_digits_gets_usage_and_changes_nothing(env: Env, seconds: str) -> None:
    before = await _state_worth_keeping(env)
    await env.say(f"/llm_force ollama {seconds}", user_id=ADMIN)  # must not raise
    (reply,) = env.api.texts(ADMIN)
    assert reply.startswith(USAGE_PREFIX)
    assert await env.state() == before


@pytest.mark.parametrize("data", ["llmadm:force", "llmadm:force:openai:extra", "llmadm:", "llmadm", "",
                                  "llmadm:clear:x:y", "nonsense", "other:clear:"])
@pytest.mark.parametrize("user_id", [ADMIN, USER])
async def test_callback_data_that_does_not_parse_is_answered_and_changes_nothing(
    env: Env, data: str, user_id: int,
) -> None:
    before = await _state_worth_keeping(env)
    await env.press(data, user_id=user_id)
    (answer,) = _answers(env)
    if data.startswith("llmadm"):
        assert answer["text"] == (UNKNOWN_ACTION if user_id == ADMIN else REFUSAL)
    assert await env.state() == before
    assert env.api.of("editMessageText") == [] and env.api.sent() == []


@pytest.mark.parametrize("command", ["/llm_status", "/llm_force openai 600", "/llm_clear", "/llm_force nosuch"])
@pytest.mark.parametrize("user_id", [ADMIN, USER])
async def test_admin_commands_in_a_group_get_a_pointer_to_the_private_chat(
    env: Env, command: str, user_id: int,
) -> None:
    await env.primary.stop()
    before = await _state_worth_keeping(env)
    await env.say(command, user_id=user_id, chat_id=GROUP)
    assert env.api.texts(GROUP) == [PRIVATE_ONLY]
    assert env.api.sent(user_id) == [] and env.api.sent(ADMIN) == []
    assert await env.state() == before


@pytest.mark.parametrize("data", ["llmadm:force:openai", "llmadm:clear:", "llmadm:check:", "llmadm:refresh:"])
async def test_status_buttons_in_a_group_get_a_pointer_and_change_nothing(env: Env, data: str) -> None:
    await env.primary.stop()
    before = await _state_worth_keeping(env)
    await env.feed(group_callback_update(data, user_id=ADMIN))
    (answer,) = _answers(env)
    assert answer["text"] == PRIVATE_ONLY
    assert env.api.of("editMessageText") == [] and env.api.sent() == []
    assert await env.state() == before
    assert env.primary.count() == 0


async def test_a_failing_status_edit_still_answers_the_button(env: Env) -> None:
    env.api.fail_next("editMessageText", 400, "Bad Request: message to edit not found")
    with pytest.raises(TelegramBadRequest):  # surfaces to aiogram's error log, as before
        await env.press("llmadm:refresh:", user_id=ADMIN)
    assert len(_answers(env)) == 1


async def test_a_callback_no_router_knows_is_answered_without_text(env: Env) -> None:
    await env.press("some-other-plugin:42", user_id=USER)
    (answer,) = _answers(env)
    assert not answer.get("text")


async def test_after_llm_clear_the_next_outage_is_announced_again(env: Env) -> None:
    alerts = AdminAlerts(env.app.bot, env.engine, [ADMIN])
    env.engine.add_listener(alerts)
    await env.primary.stop()

    await env.say("hello")
    await alerts.drain()
    await env.say("/llm_clear", user_id=ADMIN)
    await env.say("hello again")
    await alerts.drain()

    sent = env.api.texts(ADMIN)
    assert [t.startswith("🔴 LLM provider ollama is down") for t in sent] == [True, False, True], sent
    assert sent[1].startswith("🧹 Cleared.")


# --- properties -----------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

WORDS = st.sampled_from(["ollama", "openai", "OpenAI", "OLLAMA", "nosuch", "600", "60", "59", "86400", "86401",
                         "0", "-5", "1.5", "1e3", "²", "①", "６００", "٦٠٠", "0600", "", "extra", "opеnai"])
ARGS = st.one_of(
    st.lists(st.one_of(WORDS, st.integers(-10, 10**6).map(str)), max_size=3).map(" ".join),
    st.text(max_size=40),
    st.tuples(st.sampled_from(PROVIDERS), st.text(st.characters(categories=["Nd", "No", "Zs"]), min_size=1,
                                                    max_size=6)).map(" ".join),
)
CALLBACK_DATA = st.one_of(
    st.sampled_from(["llmadm:force:ollama", "llmadm:force:openai", "llmadm:clear:", "llmadm:refresh:",
                     "llmadm:force", "llmadm:", "llmadm", "", "llmadm:force:openai:x", "llmadm:explode:"]),
    st.tuples(st.sampled_from(["llmadm", "llm", "x", ""]), st.sampled_from(["force", "clear", "refresh", "", "Force"]),
              st.text(max_size=12)).map(":".join),
    st.text(max_size=64),
)
WHO = st.sampled_from([("admin", ADMIN, ADMIN), ("user", USER, USER), ("admin in group", ADMIN, GROUP),
                       ("user in group", USER, GROUP)])


def expected_force(args: str) -> tuple[str, int] | None:
    """The documented grammar, written independently: `<provider> [seconds]`, ASCII digits."""
    parts = args.split()
    if not 1 <= len(parts) <= 2 or parts[0].lower() not in PROVIDERS or not parts[0].isascii():
        return None
    if len(parts) == 1:
        return parts[0].lower(), 1800
    if not re.fullmatch(r"[0-9]+", parts[1]) or not MIN_FORCE_SECONDS <= int(parts[1]) <= MAX_FORCE_SECONDS:
        return None
    return parts[0].lower(), int(parts[1])


@PROPERTY_SETTINGS
@given(command=st.sampled_from(["llm_force", "llm_status", "llm_clear"]), args=ARGS, who=WHO)
async def test_admin_commands_reply_once_with_their_effect_or_change_nothing(
    env: Env, command: str, args: str, who: tuple[str, int, int],
) -> None:
    role, user_id, chat_id = who
    before = await _state_worth_keeping(env)

    await env.say(f"/{command} {args}", user_id=user_id, chat_id=chat_id)

    sent = env.api.sent()
    assert len(sent) == 1 and int(sent[0]["chat_id"]) == chat_id, sent
    text, after = sent[0]["text"], await env.state()
    if role != "admin":
        assert text == (REFUSAL if role == "user" else PRIVATE_ONLY)
        assert after == before
    elif command == "llm_status":
        assert text.startswith("🤖 LLM providers") and after == before
    elif command == "llm_clear":
        if args.split():
            assert text == "Usage: /llm_clear (no arguments)." and after == before
        else:
            assert text.startswith("🧹 Cleared.") and _is_cleared(after)
    elif (wanted := expected_force(args)) is None:
        assert text.startswith(USAGE_PREFIX) and after == before
    else:
        provider, seconds = wanted
        assert text.startswith(f"✅ {provider} forced for ")
        stats = await env.engine.get_provider_stats()
        assert stats["forced_provider"] == provider and seconds - 10 <= stats["forced_seconds_left"] <= seconds
        assert after[1:] == before[1:]


@PROPERTY_SETTINGS
@given(data=CALLBACK_DATA, who=WHO)
async def test_callback_data_is_answered_once_with_its_effect_or_changes_nothing(
    env: Env, data: str, who: tuple[str, int, int],
) -> None:
    role, user_id, chat_id = who
    before = await _state_worth_keeping(env)
    update = callback_update(data, user_id=user_id) if chat_id > 0 else group_callback_update(data, user_id=user_id)

    await env.feed(update)

    assert len(_answers(env)) == 1, env.api.calls
    assert env.api.sent() == [], "a button never posts a message"
    after = await env.state()
    parts = data.split(":")
    action = parts[1] if len(parts) == 3 and parts[0] == "llmadm" else None
    if role != "admin" or action not in {"force", "clear"} or (action == "force" and parts[2] not in PROVIDERS):
        assert after == before
        if role != "admin" or action != "refresh":
            assert env.api.of("editMessageText") == []
    elif action == "clear":
        assert _is_cleared(after)
    else:
        assert after[0] is not None and after[0].provider == parts[2] and after[1:] == before[1:]


async def test_group_pointer_in_russian(env: Env) -> None:
    await env.say("/llm_status", user_id=ADMIN, chat_id=GROUP, lang="ru")
    assert env.api.texts(GROUP) == ["🔒 Команды администратора LLM работают только в личном чате с ботом."]

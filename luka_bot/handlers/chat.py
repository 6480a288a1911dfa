"""Private conversations: threads, history, the streamed reply, the apology when nothing works.

A reply streams into a draft (or edits of one message) while it is generated, then goes out as
a normal message; only complete answers enter the history. The Stop button under a draft
(`stopped_message_generation`) cancels that reply: what was generated so far is sent, marked
as stopped, and kept out of the history. See `luka_bot.services.streaming`.
"""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.types import Message, MessageGenerationStopped
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from pydantic_ai.exceptions import ContentFilterError

from luka_bot.core.send_pacer import Priority, sending_as
from luka_bot.core.user_limits import COSTS_LLM
from luka_bot.services.agent_factory import create_static_agent_with_basic_tools, tool_has_side_effects
from luka_bot.services.conversations import Conversations
from luka_bot.services.llm_model_factory import LLMModelFactory
from luka_bot.services.message_text import Rendered
from luka_bot.services.streaming import AnswerCutOff, ReplyStopped, ReplyStreaming, TypingAction
from luka_bot.services.thread_names import generate_thread_name
from plugins.llm_fallback import AllProvidersFailedError, PromptTooLongError, redact

logger = logging.getLogger(__name__)

STREAMING_OFF = ReplyStreaming(enabled=False)
NAME_GRACE = 1.0
"""Seconds a finished answer waits for its thread's name: a slower name names the thread silently, later."""


def apology() -> str:
    return _("😔 I can't answer right now, try again in a minute.")


def too_long(limit_chars: int | None) -> str:
    """The message fits no provider's context window: retrying cannot help, a shorter message can."""
    if limit_chars is None:
        return _("📏 Your message is too long for me to read at once. Please shorten it or send it in parts.")
    limit = limit_chars // 100 * 100 if limit_chars >= 1000 else limit_chars  # "about": no false precision
    return _("📏 Your message is too long for me: I can read at most about {limit} characters at once. "
             "Please shorten it or send it in parts.").format(limit=limit)


def refused() -> str:
    return _("🙅 The model declined to answer that. Try asking differently.")


def cut_off(partial: str) -> str:
    """The answer as far as the model got, marked as cut off at its length limit."""
    return f"{partial.rstrip()}\n\n" + _("✂️ The answer was cut off here: it reached the model's length limit.")


def stopped(partial: Rendered) -> Rendered:
    """The partial answer (as its frames showed it), marked as stopped by the user."""
    mark = _("⏹ Stopped.")
    return partial.then_plain(f"\n\n{mark}") if partial.text.strip() else Rendered(mark)


def build_router() -> Router:
    router = Router(name="chat")
    router.message.filter(F.chat.type == "private")

    @router.message(Command("new"))
    async def new_thread(message: Message, conversations: Conversations) -> None:
        await conversations.start_thread(message.chat.id)
        await message.answer(_("🧵 New thread started. What shall we talk about?"))

    @router.message(Command("threads"))
    async def list_threads(message: Message, conversations: Conversations) -> None:
        threads = await conversations.threads(message.chat.id)
        if not threads:
            await message.answer(_("You have no threads yet. Just write me a message."))
            return
        lines = [_("🧵 Your recent threads:")] + [f"{i}. {t.name}" for i, t in enumerate(threads[:10], start=1)]
        await message.answer("\n".join(lines), parse_mode=None)

    @router.message(F.text & ~F.text.startswith("/"), flags={COSTS_LLM: True})  # within the user's limits
    async def chat(message: Message, bot: Bot, conversations: Conversations, llm_models: LLMModelFactory,
                   reply_streaming: ReplyStreaming = STREAMING_OFF) -> None:
        user_id = message.chat.id
        text = message.text or ""
        i18n = I18n.get_current(no_error=True)
        locale = i18n.current_locale if i18n else "en"
        thread_id = await conversations.current_thread(user_id)
        history, answered = (await conversations.recall(user_id, thread_id, message.message_id) if thread_id
                             else ([], None))
        # a thread's first message names it, once: not again when the message is handled again after a kill
        is_new = not history and (thread_id is None or not await conversations.named(user_id, thread_id))
        thread_id = thread_id or await conversations.start_thread(user_id)
        async with reply_streaming.reply(bot, message) as reply:
            if answered is not None:  # handled again: its answer was stored, then the process died before sending
                logger.info("📥 message %s of user %s was answered before its process stopped: sending that answer",
                            message.message_id, user_id)
                await reply.deliver(message, answered)
                return
            async with TypingAction.typing(bot=bot, chat_id=message.chat.id):
                agent = await create_static_agent_with_basic_tools(user_id, llm_models)
                name_task = (asyncio.create_task(generate_thread_name(text, locale, llm_models))
                             if is_new else None)
                try:
                    answer = await reply.generate(agent, text, history, attempts=len(llm_models.fallback.configured),
                                                  has_side_effects=tool_has_side_effects)
                except ReplyStopped as stop:
                    logger.info("⏹ reply to user %s stopped by the user after %d characters", user_id,
                                len(stop.partial))
                    await _discard(name_task)
                    await reply.deliver(message, stopped(reply_streaming.render_draft(stop.partial)))
                    return
                except AnswerCutOff as cut:  # shown, marked, and kept out of the history
                    logger.info("✂️ reply to user %s reached the model's length limit", user_id)
                    await reply.deliver(message, cut_off(cut.partial))
                    await _name_later(name_task, conversations, user_id, thread_id)
                    return
                except Exception as error:  # noqa: BLE001 - the user gets a short note, never a traceback
                    await _discard(name_task)
                    await reply.deliver(message, Rendered(_no_answer(error, user_id, text)))
                    return
                name = await _name_of(name_task, conversations, user_id, thread_id)
            if name:
                await conversations.name_thread(user_id, thread_id, name)
                with sending_as(Priority.THREAD_NAME):
                    await message.answer(f"🧵 {name}", parse_mode=None)
            await conversations.add_turn(user_id, thread_id, text, answer, message_id=message.message_id)
            await reply.deliver(message, answer)

    @router.stopped_message_generation()
    async def stop(event: MessageGenerationStopped, reply_streaming: ReplyStreaming = STREAMING_OFF) -> None:
        if not await reply_streaming.generations.stop(event.chat.id, event.draft_id):
            logger.info("⏹ Stop for chat %s draft %s: no such reply running here", event.chat.id, event.draft_id)

    return router


def _no_answer(error: Exception, user_id: int, text: str) -> str:
    """What the user is told when no answer came, logged once (the fallback logged its own failures)."""
    if isinstance(error, ContentFilterError):  # a refusal is the model's answer: not routed around, not stored
        logger.info("🙅 reply to user %s refused by the model's content filter", user_id)
        return refused()
    if isinstance(error, PromptTooLongError):  # not an outage: only a shorter message can be answered
        logger.info("📏 message of user %s (%d characters) fits no provider's context window", user_id, len(text))
        return too_long(error.limit_chars)
    if isinstance(error, AllProvidersFailedError):  # logged and announced once by the fallback itself
        logger.info("apologised to user %s: no provider could answer", user_id)
    else:
        logger.error("chat reply failed for user %s: %s", user_id, redact(f"{type(error).__name__}: {error}")[:300])
    return apology()


async def _discard(task: asyncio.Task[str] | None) -> None:
    """Stop a thread-name task nobody needs any more, and collect its outcome."""
    if task is None:
        return
    # A cancel can be lost inside a Redis call: collect the outcome whenever it comes, wait a little.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)


async def _name_of(task: asyncio.Task[str] | None, conversations: Conversations, user_id: int,
                   thread_id: str) -> str | None:
    """The thread's name if it is ready within `NAME_GRACE`; else it names the thread when it comes."""
    if task is None:
        return None
    done, _ = await asyncio.wait({task}, timeout=NAME_GRACE)
    if not done:
        await _name_later(task, conversations, user_id, thread_id)
        return None
    return _named(task)


def _named(task: asyncio.Task[str]) -> str | None:
    if task.cancelled():
        return None
    if (error := task.exception()) is not None:  # a thread without a name is fine
        logger.info("thread name not generated: %s", type(error).__name__)
        return None
    return task.result()


async def _name_later(task: asyncio.Task[str] | None, conversations: Conversations, user_id: int,
                      thread_id: str) -> None:
    """Let a slow name finish on its own, then name the thread quietly (the answer went out without it)."""
    if task is None:
        return

    def store(done: asyncio.Task[str]) -> None:
        if name := _named(done):
            naming = asyncio.get_running_loop().create_task(conversations.name_thread(user_id, thread_id, name))
            _LATE_NAMES.add(naming)
            naming.add_done_callback(_LATE_NAMES.discard)

    task.add_done_callback(store)


_LATE_NAMES: set[asyncio.Task[object]] = set()

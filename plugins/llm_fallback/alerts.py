"""Private alerts to admins when a provider goes down, recovers, or every provider fails.

Down/recovered alerts are deduplicated per provider by state transition, across every process
sharing the store: `alert:<provider>` holds the state admins were last told ("down" or
"recovered"), and only the process whose compare-and-set moves it sends the alert. So an outage
is announced once however many processes see it, and down → recovered → down always ends on
"down". A wiped key (`/llm_clear` clears the whole namespace) means the next change is announced.
A standby's readiness (`standby_failed` / `standby_ready`) is deduplicated the same way, under
`alert:standby:<provider>`. "Every provider failed" is sent at most once per cooldown window (`SET NX` on
`alert:all_failed`). Sending happens in the background, in event order: an alert never delays or
breaks an LLM call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from aiogram import Bot
from aiogram.exceptions import TelegramRetryAfter

from .engine import LLMProviderFallback
from .events import Event, HealthEvent
from .texts import duration, gettext_for

logger = logging.getLogger(__name__)

ALERT_MEMORY = 24 * 3600.0
"""How long the last announced state of a provider is remembered (a day-long outage is re-announced)."""
_CAS_ROUNDS = 3


class AdminAlerts:
    def __init__(self, bot: Bot, fallback: LLMProviderFallback, admin_ids: Collection[int],
                 *, locale: str | None = None):
        self.bot = bot
        self.fallback = fallback
        self.admin_ids = list(admin_ids)
        self.locale = locale
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_order = asyncio.Lock()

    def __call__(self, event: Event) -> None:
        if isinstance(event, HealthEvent) and self.admin_ids:
            task = asyncio.get_running_loop().create_task(self._alert(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _alert(self, event: HealthEvent) -> None:
        async with self._in_order:  # events of one process are announced in the order they happened
            try:
                if not await self._first_to_announce(event):
                    return
                text = self._text(event, fallback_available=event.has_working_fallback)
                for admin_id in self.admin_ids:
                    await self.bot.send_message(admin_id, text)
            except TelegramRetryAfter:  # flood control gave up on it: the session said so in one line
                return
            except Exception:  # an admin who blocked the bot must not break anything
                logger.warning("could not send an LLM admin alert (%s)", event.kind, exc_info=True)

    async def _first_to_announce(self, event: HealthEvent) -> bool:
        store = self.fallback.store
        if event.kind == "all_failed":
            window = event.cooldown or self.fallback.health.failure_cooldown
            return await store.set("alert:all_failed", "1", window, only_if_absent=True)
        key = {"standby_failed": "alert:standby:", "standby_ready": "alert:standby:",
               "rejects_requests": "alert:rejects:"}.get(event.kind, "alert:") + str(event.provider)
        for _ in range(_CAS_ROUNDS):
            (told,) = await store.get_many([key])
            if told == event.kind:
                return False  # already announced (by this or another process)
            if told is None:
                moved = await store.set(key, event.kind, ALERT_MEMORY, only_if_absent=True)
            else:
                moved = await store.replace_if_equal(key, told, event.kind, ALERT_MEMORY)
            if moved:
                return True
        return False

    def _text(self, event: HealthEvent, *, fallback_available: bool = True) -> str:
        t = self.locale
        error = (event.error or "").rstrip(". ")  # the texts end the error's sentence themselves
        if event.kind == "down":
            left = duration(event.cooldown or 0, t)
            if fallback_available:
                return gettext_for(t, "🔴 LLM provider {provider} is down: {error}. It is skipped for {left}; "
                                      "the fallback answers meanwhile.",
                                   provider=event.provider, error=error, left=left)
            return gettext_for(t, "🔴 LLM provider {provider} is down: {error}. It is skipped for {left}; "
                                  "no other provider can answer meanwhile: users get an apology.",
                               provider=event.provider, error=error, left=left)
        if event.kind == "recovered":
            return gettext_for(t, "🟢 LLM provider {provider} is back and serving again.", provider=event.provider)
        if event.kind == "standby_failed":
            setting = f" ({event.setting})" if event.setting else ""
            return gettext_for(t, "⚠️ {provider} can't answer: {error}{setting}. If {serving} fails now, users get "
                                  "apologies.", provider=event.provider, error=error, setting=setting,
                               serving=event.serving or "the serving provider")
        if event.kind == "rejects_requests":
            return gettext_for(t, "⚠️ LLM provider {provider} refuses every request: {error}. They go to the next "
                                  "provider meanwhile; check its configuration (a model without tool support, say).",
                               provider=event.provider, error=error)
        if event.kind == "standby_ready":
            return gettext_for(t, "🟢 {provider} answers again: the fallback is ready.", provider=event.provider)
        attempts = "\n".join(f"• {a}" for a in event.attempts)
        return gettext_for(t, "❌ All LLM providers failed! Users get an apology until one recovers.\n{attempts}",
                           attempts=attempts)

    async def drain(self) -> None:
        """Wait for alerts still being sent (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

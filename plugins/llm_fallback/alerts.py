"""Private alerts to admins when a provider goes down, recovers, or every provider fails.

At most one alert per provider and kind per cooldown window, across every process sharing
the store (`SET NX` on `alert:<kind>:<provider>`), so an outage never floods admins. Sending
happens in the background: an alert never delays or breaks an LLM call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from aiogram import Bot

from .engine import LLMProviderFallback
from .events import Event, HealthEvent
from .texts import duration, gettext_for

logger = logging.getLogger(__name__)


class AdminAlerts:
    def __init__(self, bot: Bot, fallback: LLMProviderFallback, admin_ids: Collection[int],
                 *, locale: str | None = None):
        self.bot = bot
        self.fallback = fallback
        self.admin_ids = list(admin_ids)
        self.locale = locale
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: Event) -> None:
        if isinstance(event, HealthEvent) and self.admin_ids:
            task = asyncio.get_running_loop().create_task(self._alert(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _alert(self, event: HealthEvent) -> None:
        key = f"alert:{event.kind}:{event.provider or 'all'}"
        window = event.cooldown or self.fallback.failure_cooldown
        try:
            if not await self.fallback.store.set(key, "1", window, only_if_absent=True):
                return
            text = self._text(event)
            for admin_id in self.admin_ids:
                await self.bot.send_message(admin_id, text)
        except Exception:
            logger.warning("could not send an LLM admin alert (%s)", event.kind, exc_info=True)

    def _text(self, event: HealthEvent) -> str:
        t = self.locale
        if event.kind == "down":
            return gettext_for(t, "🔴 LLM provider {provider} is down: {error}. It is skipped for {left}; "
                                  "the fallback answers meanwhile.",
                               provider=event.provider, error=event.error, left=duration(event.cooldown or 0, t))
        if event.kind == "recovered":
            return gettext_for(t, "🟢 LLM provider {provider} is back and serving again.", provider=event.provider)
        attempts = "\n".join(f"• {a}" for a in event.attempts)
        return gettext_for(t, "❌ All LLM providers failed! Users get an apology until one recovers.\n{attempts}",
                           attempts=attempts)

    async def drain(self) -> None:
        """Wait for alerts still being sent (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

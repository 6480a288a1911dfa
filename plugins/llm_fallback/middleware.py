"""The outer middleware that hands the fallback service and model factory to every handler.

It also knows which updates are being handled, so a shutdown can let in-flight replies finish
(or cancel them after a grace period — a cancelled request is never counted as a provider
failure) before the provider clients close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject

from .engine import LLMProviderFallback
from .factory import ModelFactory


class LLMFallbackMiddleware(BaseMiddleware):
    """Puts `llm_fallback` and `llm_models` into the handler data (declare a parameter to get them)."""

    def __init__(self, fallback: LLMProviderFallback, models: ModelFactory):
        self.fallback = fallback
        self.models = models
        self._in_flight: set[asyncio.Task[Any]] = set()

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        data["llm_fallback"] = self.fallback
        data["llm_models"] = self.models
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            return await handler(event, data)
        finally:
            self._in_flight.discard(task)  # type: ignore[arg-type]

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for updates being handled, then cancel the rest."""
        pending = {task for task in self._in_flight if task is not asyncio.current_task()}
        if not pending:
            return
        _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

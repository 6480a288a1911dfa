"""The outer middleware that hands the fallback service and model factory to every handler."""

from __future__ import annotations

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

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        data["llm_fallback"] = self.fallback
        data["llm_models"] = self.models
        return await handler(event, data)

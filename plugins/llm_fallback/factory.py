"""`ModelFactory`: what handlers receive to get a fallback-aware model."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from pydantic_ai.settings import ModelSettings

from .engine import LLMProviderFallback
from .model import LLMFallbackModel

T = TypeVar("T")


class ModelFactory:
    """Hands out `LLMFallbackModel`s bound to one `LLMProviderFallback`.

    Cheap to call per request: the provider clients and their connection pools live in the
    engine and are shared by every model handed out.
    """

    def __init__(self, fallback: LLMProviderFallback):
        self.fallback = fallback
        self._reused: dict[Hashable, Any] = {}

    def reused(self, key: Hashable, build: Callable[[], T]) -> T:
        """The object built once for `key` (an agent over a model of this factory), then reused."""
        if key not in self._reused:
            self._reused[key] = build()
        return self._reused[key]

    def create(
        self,
        context: str | None = None,
        model_settings: ModelSettings | None = None,
        force_provider: str | None = None,
        *,
        background: bool = False,
    ) -> LLMFallbackModel:
        """A model that falls back between providers; `force_provider` pins one (no other provider is tried).

        `background`: its calls are not what a user waits for (a thread name): an outage they meet is
        logged at INFO and not announced (the user's own request announces it)."""
        return LLMFallbackModel(self.fallback, pinned=force_provider, settings=model_settings, context=context,
                                background=background)

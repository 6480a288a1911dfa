"""An explicit "check now": one real, minimal chat completion per provider, classified like any call.

A cheap endpoint answering 200 proves nothing about chat completions (an HTML page on `/models`,
an OpenAI-compatible server without Ollama's `/api/tags`), so the check asks for one token from
the provider's models in order (a 404 moves to the next model) and records the outcome exactly
as a real request would: success clears the cooldown, a failure starts one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pydantic_ai.messages import ModelRequest
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.settings import ModelSettings

from .errors import DeadlineExceeded, FailureKind, classify

if TYPE_CHECKING:
    from .engine import LLMProviderFallback

CHECK_PROMPT = "Reply with OK."


async def check_provider(engine: LLMProviderFallback, provider: str, *, timeout: float = 10.0) -> str | None:
    """None when `provider` completed a 1-token request, else a short redacted reason (recorded)."""
    spec = engine.specs[provider]
    settings = ModelSettings(max_tokens=1, timeout=timeout)
    reason: str | None = None
    for model_name in spec.models:
        model = engine.models[provider][model_name]
        try:
            async with asyncio.timeout(timeout + 1.0):
                await model.request([ModelRequest.user_text_prompt(CHECK_PROMPT)], settings, ModelRequestParameters())
        except TimeoutError:
            error: BaseException = DeadlineExceeded(f"no answer within {timeout:.0f}s")
        except Exception as caught:  # noqa: BLE001 - every outcome is classified and reported
            error = caught
        else:
            await engine.report_provider_success(provider)
            return None
        verdict = classify(error)
        reason = f"{verdict.kind.value}: {engine.describe(error)}"
        if verdict.kind is FailureKind.MODEL_MISSING:
            continue
        if not verdict.cool_down:
            # The provider answered, but refused this request (a 400): it is up, say why.
            return reason
        await engine.report_provider_failure(provider, error, context="check")
        return reason
    await engine.report_provider_failure(provider, _AllModelsMissing(reason or "no model"), context="check")
    return reason


class _AllModelsMissing(Exception):
    """None of the provider's models exist there: the provider cannot serve, cool it down."""


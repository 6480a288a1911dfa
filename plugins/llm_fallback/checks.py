"""An explicit "check now": one real, minimal chat completion per provider, classified like any call.

A cheap endpoint answering 200 proves nothing about chat completions (an HTML page on `/models`,
an OpenAI-compatible server without Ollama's `/api/tags`), so the check asks for one token from
the provider's models in order (a 404 moves to the next model) and records the outcome in the
provider's health as a real request would: success ends a cooldown, a failure starts one.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic_ai.messages import ModelRequest
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.settings import ModelSettings

from .errors import Blame, FailureKind, classify
from .health import ProviderHealth
from .providers import ProviderRegistry

CHECK_PROMPT = "Reply with OK."


async def check_provider(registry: ProviderRegistry, health: ProviderHealth, provider: str, *, timeout: float,
                         describe: Callable[[BaseException], str]) -> str | None:
    """None when `provider` completed a 1-token request, else a short redacted reason (recorded)."""
    settings = ModelSettings(max_tokens=1, timeout=timeout, request_timeout=timeout + 1.0)
    reason: str | None = None
    for model_name in registry.specs[provider].models:
        try:
            await registry.gate(provider, model_name).request(
                [ModelRequest.user_text_prompt(CHECK_PROMPT)], settings, ModelRequestParameters())
        except Exception as error:  # noqa: BLE001 - every outcome is classified and reported
            verdict = classify(error)
            reason = f"{verdict.kind.value}: {describe(error)}"
            if verdict.kind is FailureKind.MODEL_MISSING:
                continue
            if verdict.blame is Blame.NONE:
                return reason  # the provider answered, but refused this request (a 400): it is up, say why
            await health.failed(None, provider, verdict.kind.value, f"{describe(error)} [check]",
                                retry_after=verdict.retry_after)
            return reason
        await health.mark_healthy(provider, why="check")
        return None
    await health.failed(None, provider, FailureKind.MODEL_MISSING.value,
                        f"none of its models exist there: {reason or 'no model'} [check]")
    return reason

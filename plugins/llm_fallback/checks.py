"""A real, minimal chat completion to a provider: for "check now", recovery probes and readiness checks.

A cheap endpoint answering 200 proves nothing about chat completions (an HTML page on `/models`,
an OpenAI-compatible server without Ollama's `/api/tags`), so a check asks for one token from
the provider's models in order (a 404 moves to the next model) and classifies the outcome like
any call. `check_provider` ("check now") records it in the provider's health as a real request
would: success ends a cooldown, a failure starts one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from pydantic_ai.exceptions import ModelRequestTimeout
from pydantic_ai.messages import ModelRequest
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.settings import ModelSettings

from .errors import Blame, FailureKind, Verdict, classify
from .health import ProviderHealth
from .providers import ProviderRegistry

CHECK_PROMPT = "Reply with OK."


@dataclass(frozen=True)
class CheckResult:
    """One provider's answer to a check: `verdict` None when a model answered."""

    provider: str
    verdict: Verdict | None = None
    error: str | None = None
    """Short, redacted description of what went wrong."""

    @property
    def ok(self) -> bool:
        return self.verdict is None

    @property
    def reason(self) -> str | None:
        return None if self.verdict is None else f"{self.verdict.kind.value}: {self.error}"


async def try_provider(registry: ProviderRegistry, provider: str, *, timeout: float,
                       describe: Callable[[BaseException, str], str], streamed: bool = False) -> CheckResult:
    """Ask `provider`'s models in order for one token (streamed if asked); records nothing.

    Within the provider's own timeout, when shorter than `timeout`: what users would not wait for
    does not make it healthy, and the check ends before its checker lease (timeout + margin) does."""
    timeout = min(timeout, registry.specs[provider].timeout)
    settings = ModelSettings(max_tokens=1, timeout=timeout)
    params = ModelRequestParameters()
    result = CheckResult(provider, Verdict(FailureKind.MODEL_MISSING, True, Blame.MODEL), "no model")
    for model_name in registry.specs[provider].models:
        model = registry.model(provider, model_name)
        prompt = model.prepare_messages([ModelRequest.user_text_prompt(CHECK_PROMPT)], params)
        opened = False
        try:
            async with asyncio.timeout(timeout + 1.0):
                if streamed:
                    async with model.request_stream(prompt, settings, params) as stream:
                        opened = True
                        async for _ in stream:
                            pass
                else:
                    await model.request(prompt, settings, params)
        except TimeoutError:
            error = ModelRequestTimeout(model.model_name, timeout)
            return CheckResult(provider, classify(error, after_first_event=opened), describe(error, provider))
        except Exception as error:  # noqa: BLE001 - every outcome is classified and reported
            verdict = classify(error, after_first_event=opened)
            result = CheckResult(provider, verdict, describe(error, provider))
            if verdict.kind is FailureKind.MODEL_MISSING:
                continue
            return result
        return CheckResult(provider)
    return result


async def check_provider(registry: ProviderRegistry, health: ProviderHealth, provider: str, *, timeout: float,
                         describe: Callable[[BaseException, str], str]) -> str | None:
    """"Check now": None when `provider` completed a 1-token request, else a short redacted reason (recorded).

    A provider whose streams failed is checked with a stream: a short call proves nothing about those."""
    record = (await health.read()).failure(provider)
    result = await try_provider(registry, provider, timeout=timeout, describe=describe,
                                streamed=record is not None and record.streamed)
    if result.verdict is None:
        await health.mark_healthy(provider, why="check")
        return None
    if result.verdict.kind is FailureKind.MODEL_MISSING:
        await health.failed(None, provider, FailureKind.MODEL_MISSING.value,
                            f"none of its models exist there: {result.error} [check]")
    elif result.verdict.blame is not Blame.NONE:
        await health.failed(None, provider, result.verdict.kind.value, f"{result.error} [check]",
                            retry_after=result.verdict.retry_after)
    # else the provider answered, but refused this request (a 400): it is up, say why
    return result.reason

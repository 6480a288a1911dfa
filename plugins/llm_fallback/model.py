"""The pydantic-ai model every caller gets: pydantic-ai's `FallbackModel`, plus memory.

`FallbackModel` already fails over within one request (and, for streams, only before the
first event). `FailoverModel` adds what it lacks: per request it asks the engine for the
attempt order (cooldowns, half-open probe, force — shared through the store), builds a
`FallbackModel` over that order, and every attempt reports its outcome back.

Structure of one request's chain::

    FallbackModel(fallback_on=ProviderFailure)         # providers, in the plan's order
      └─ FallbackModel(fallback_on=ModelMissing)      # one provider's models (if several)
           └─ _Attempt(WrapperModel)                  # one provider/model: classify + record
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from pydantic_ai._fallback import request_stream_until_first_event
from pydantic_ai._run_context import RunContext
from pydantic_ai.exceptions import FallbackExceptionGroup
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from .engine import LLMProviderFallback, Plan, flatten_attempts
from .errors import Attempt, FailureKind, ProviderFailure, StreamCutError


class ModelMissing(ProviderFailure):
    """This model is not on this provider (HTTP 404): the provider's next model is tried."""


def _falls_over(error: Exception) -> bool:
    """`fallback_on` of the provider chain: our failures, or a provider whose models all 404."""
    if isinstance(error, FallbackExceptionGroup):
        return all(_falls_over(e) for e in error.exceptions)
    return isinstance(error, ProviderFailure)


# pydantic-ai reads a handler's hints on every FallbackModel built (one per request): give it
# real types rather than strings to evaluate each time (`from __future__ import annotations`).
_falls_over.__annotations__ = {"error": Exception, "return": bool}


class _Attempt(WrapperModel):
    """One provider/model in one request's chain: classifies and records its outcome."""

    def __init__(self, plan: Plan, provider: str, model_name: str, model: Model):
        super().__init__(model)
        self.plan = plan
        self.provider_name = provider
        self.provider_model = model_name
        self.connect_timeout = plan.engine.specs[provider].connect_timeout

    def _with_connect_timeout(self, model_settings: ModelSettings | None) -> ModelSettings | None:
        """A caller's `timeout` (seconds) bounds the generation, not the connect: keep ours short."""
        timeout = (model_settings or {}).get("timeout")
        if isinstance(timeout, int | float):
            return {**model_settings, "timeout": httpx2.Timeout(timeout, connect=min(timeout, self.connect_timeout))}  # type: ignore[typeddict-item]
        return model_settings

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        try:
            response = await self.wrapped.request(messages, self._with_connect_timeout(model_settings), model_request_parameters)
        except Exception as error:
            raise await self._failure(error) from error
        await self.plan.succeeded(self.provider_name, self.provider_model)
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        handed_over = False
        try:
            async with request_stream_until_first_event(
                self.wrapped, None, messages, self._with_connect_timeout(model_settings), model_request_parameters, run_context
            ) as stream:
                handed_over = True
                await self.plan.succeeded(self.provider_name, self.provider_model)
                yield stream
        except Exception as error:
            if not handed_over:
                raise await self._failure(error) from error
            # Cut after the first event: half an answer is out, so raise; the provider cools down.
            verdict = await self.plan.failed(self.provider_name, self.provider_model, error, streamed=True)
            if verdict.cool_down:
                raise StreamCutError(self.provider_name, self.provider_model, self.plan.engine.describe(error)) from None
            raise

    async def _failure(self, error: Exception) -> Exception:
        """The exception to raise: a failover marker, or the caller's own error unchanged."""
        verdict = await self.plan.failed(self.provider_name, self.provider_model, error)
        if not verdict.fail_over:
            return error
        attempt = Attempt(self.provider_name, self.provider_model, verdict.kind, self.plan.engine.describe(error))
        return (ModelMissing if verdict.kind is FailureKind.MODEL_MISSING else ProviderFailure)([attempt])


class FailoverModel(FallbackModel):
    """A pydantic-ai `Model` that fails over between providers with shared, remembered health.

    `pin`: a strict pin to one provider (its models in order, no other provider, cooldown
    ignored) — the factory's `force_provider=` for testing and debugging.
    """

    def __init__(
        self,
        engine: LLMProviderFallback,
        *,
        pin: str | None = None,
        settings: ModelSettings | None = None,
        context: str | None = None,
    ):
        providers = [pin] if pin else engine.configured
        if pin is not None:
            engine._spec(pin)
        models = [m for p in providers for m in engine.models.get(p, {}).values()]
        if not models:
            raise ValueError(f"no configured provider to use (pin={pin!r})")
        super().__init__(*models)
        self.engine = engine
        self.pin = pin
        self.context = context
        self._settings = settings

    @property
    def model_name(self) -> str:
        return f"failover:{self.pin or ','.join(self.engine.configured)}"

    def _chain_for(self, plan: Plan) -> Model:
        if not plan.candidates:
            raise ProviderFailure([])
        chains: list[Model] = []
        for candidate in plan.candidates:
            provider_models = self.engine.models[candidate.provider]
            attempts = [_Attempt(plan, candidate.provider, m, provider_models[m]) for m in candidate.models]
            chains.append(attempts[0] if len(attempts) == 1 else FallbackModel(*attempts, fallback_on=(ModelMissing,)))
        return FallbackModel(*chains, fallback_on=_falls_over)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        plan = await self.engine.plan(pin=self.pin)
        try:
            return await self._chain_for(plan).request(messages, model_settings, model_request_parameters)
        except FallbackExceptionGroup as group:
            raise await self.engine.all_failed(flatten_attempts(group.exceptions)) from None
        except ProviderFailure as failure:  # a strict pin with one model
            raise await self.engine.all_failed(failure.attempts) from None
        finally:
            await plan.release()

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        plan = await self.engine.plan(pin=self.pin)
        try:
            async with self._chain_for(plan).request_stream(
                messages, model_settings, model_request_parameters, run_context
            ) as stream:
                yield stream
        except FallbackExceptionGroup as group:
            raise await self.engine.all_failed(flatten_attempts(group.exceptions)) from None
        except ProviderFailure as failure:
            raise await self.engine.all_failed(failure.attempts) from None
        finally:
            await plan.release()

"""`LLMFallbackModel`: the pydantic-ai model every caller gets.

Per request it asks the engine for a `Plan` (shared health: cooldowns, half-open probes, the
forced provider) and runs `ProviderAttempt`s in the plan's order until one answers: one flat
loop, or the hedged race (`hedging.py`) when hedging is on.

It subclasses pydantic-ai's `FallbackModel` for what that already does over several models
(profile, request preparation, lifecycle of the wrapped models, no deadline around the whole
chain) and replaces its request loop, which has no memory: ours skips providers in cooldown,
probes a recovered one once, and fails over on an empty reply or an unusable answer. Apart
from `__init__`, all methods are private or match those of the base class.

`pinned` (the factory's `force_provider=`): that provider only, no fallback; different from a
provider forced by an admin (`/llm_force`), which goes first with the others behind it.
`background`: a call nobody waits for (a thread name): when no provider can answer it, that is
logged at INFO and not announced; the user's own request announces the outage once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryFeedbackPart,
    RetryPromptPart,
    ToolReturnPart,
)
from pydantic_ai.models import ModelRequestParameters, StreamedResponse
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.settings import ModelSettings

from .attempt import ProviderAttempt, answered_by
from .engine import LLMProviderFallback
from .errors import surfaced
from .plan import Plan, Target

T = TypeVar("T")

_AVOIDED: ContextVar[frozenset[str]] = ContextVar("llm_fallback_avoided", default=frozenset())


@contextmanager
def avoiding(*providers: str) -> Iterator[None]:
    """Requests made inside go to `providers` only after every other one (a reply restarted after
    its stream broke off on them must not start on the same provider again)."""
    token = _AVOIDED.set(_AVOIDED.get() | frozenset(providers))
    try:
        yield
    finally:
        _AVOIDED.reset(token)


class LLMFallbackModel(FallbackModel):
    """A pydantic-ai `Model` that falls back between providers with shared, remembered health."""

    def __init__(self, engine: LLMProviderFallback, *, pinned: str | None = None,
                 settings: ModelSettings | None = None, context: str | None = None, background: bool = False):
        if pinned is not None:
            engine.providers.spec(pinned)
        models = [m for p in ([pinned] if pinned else engine.configured) for m in engine.providers.model_list(p)]
        if not models:
            raise ValueError(f"no configured provider to use (pinned={pinned!r})")
        super().__init__(*models)
        self.engine = engine
        self.pinned = pinned
        self.context = context
        self.background = background
        self._settings = settings

    @property
    def model_name(self) -> str:
        return f"fallback:{self.pinned or ','.join(self.engine.configured)}"

    def _attempt(self, plan: Plan, target: Target, settings: ModelSettings | None, *, streamed: bool) -> ProviderAttempt:
        return self.engine.attempt(plan, target, settings, streamed=streamed)

    async def _plan(self, messages: list[ModelMessage]) -> Plan:
        plan = await self.engine.plan(pinned=self.pinned)
        rejected = _rejected_providers(messages)
        if rejected and self.pinned is None:
            await plan.rejected_output(rejected[0])
        plan.avoid(_AVOIDED.get())
        return plan

    async def _exhausted(self, plan: Plan) -> BaseException:
        """The error when no attempt of `plan` answered: the request's own (no outage), else "all failed"."""
        return plan.requests_own_error() or await self.engine.report_all_failed(
            plan.failures, context=self.context, quiet=self.background)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        async with self.engine.admission():
            plan = await self._plan(messages)
            try:
                return await self._first_answer(
                    plan, lambda target: self._attempt(plan, target, model_settings, streamed=False),
                    lambda attempt: attempt.request(messages, model_request_parameters))
            finally:
                await plan.close()

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncGenerator[StreamedResponse]:
        async with self.engine.admission():
            plan = await self._plan(messages)

            async def open_(attempt: ProviderAttempt) -> tuple[ProviderAttempt, StreamedResponse]:
                return attempt, await attempt.open_stream(messages, model_request_parameters, run_context)

            try:
                attempt, stream = await self._first_answer(
                    plan, lambda target: self._attempt(plan, target, model_settings, streamed=True), open_)
            except BaseException:
                await plan.close()
                raise
            try:
                try:
                    yield stream
                except BaseException as error:
                    await attempt.stream_ended(stream, error)
                    raise
                if await attempt.stream_ended(stream, None) and \
                        {attempt.provider, *_rejected_providers(messages)} >= set(plan.order):
                    # The agent would ask again, but every provider already gave it nothing it could use.
                    raise await self._exhausted(plan)
            finally:
                await attempt.close()
                await plan.close()

    async def _first_answer(self, plan: Plan, start: Callable[[Target], ProviderAttempt],
                            run: Callable[[ProviderAttempt], Awaitable[T]]) -> T:
        """Attempts in the plan's order until one produces its first event (hedged if configured)."""
        if self.engine.hedging.enabled and self.pinned is None:
            answer = await self.engine.hedging.race(plan, start, run)
            if answer is not None:
                return answer
            raise await self._exhausted(plan)
        while (target := await plan.next_target()) is not None:
            attempt = start(target)
            try:
                return await run(attempt)
            except asyncio.CancelledError:
                await attempt.abandoned("cancelled")
                raise
            except Exception as error:  # noqa: BLE001 - classified: raised unless it falls back
                if not (verdict := await attempt.failed(error)).fall_back:
                    raise surfaced(error, verdict)
        raise await self._exhausted(plan)


MODEL_FAULTS = frozenset({"validation_error", "unknown_tool", "no_output"})
"""Retry causes that mean the model's reply was unusable (not a tool's own `ModelRetry`)."""


def _rejected_providers(messages: list[ModelMessage]) -> list[str]:
    """The providers whose replies the agent could not use in the retries that end `messages`, latest first."""
    rejected: list[str] = []
    index = len(messages) - 1
    while index >= 1:
        request, response = messages[index], messages[index - 1]
        if not (isinstance(request, ModelRequest) and isinstance(response, ModelResponse)
                and any(_is_model_fault(part) for part in request.parts)):
            break
        if (provider := answered_by(response)) is not None:
            rejected.append(provider)
        index -= 2
    return rejected


def _is_model_fault(part: object) -> bool:
    if isinstance(part, RetryPromptPart):
        return True
    retry = getattr(part, "retry", None)
    if isinstance(part, ToolReturnPart) and part.outcome != "retried":
        return False
    return isinstance(part, ToolReturnPart | RetryFeedbackPart) and getattr(retry, "cause", None) in MODEL_FAULTS

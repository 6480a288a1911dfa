"""`LLMFallbackModel`: the pydantic-ai model every caller gets.

Per request it asks the engine for a `Plan` (shared health: cooldowns, half-open probes, the
forced provider) and runs `ProviderAttempt`s in the plan's order until one answers. Each
attempt is one place that sees one provider/model from start to real end and records it once.

It subclasses pydantic-ai's `FallbackModel` for what that already does well over several
models (profile, request preparation, lifecycle of the wrapped models) and replaces its request
loop, which has no memory: ours skips providers in cooldown, probes a recovered one once,
enforces deadlines per attempt (so pydantic-ai never cancels an attempt from outside), fails
over on an empty reply or an unusable answer, and can hedge a slow first token.

Two words, two things: a *forced* provider (`/llm_force`) goes first with the others behind it;
a *pinned* provider (the factory's `force_provider=`) is the only one tried.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
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
from .engine import LLMProviderFallback, Plan, Step

T = TypeVar("T")


class LLMFallbackModel(FallbackModel):
    """A pydantic-ai `Model` that falls back between providers with shared, remembered health."""

    def __init__(
        self,
        engine: LLMProviderFallback,
        *,
        pinned: str | None = None,
        settings: ModelSettings | None = None,
        context: str | None = None,
    ):
        providers = [pinned] if pinned else engine.configured
        if pinned is not None:
            engine._spec(pinned)
        models = [m for p in providers for m in engine.models.get(p, {}).values()]
        if not models:
            raise ValueError(f"no configured provider to use (pinned={pinned!r})")
        super().__init__(*models)
        self.engine = engine
        self.pinned = pinned
        self.context = context
        self._settings = settings

    @property
    def model_name(self) -> str:
        return f"fallback:{self.pinned or ','.join(self.engine.configured)}"

    def _start_request_deadline(self, model_settings: ModelSettings | None, *, stream: bool) -> None:
        """Deadlines are enforced per attempt (`ProviderAttempt`), never around the whole chain."""
        return

    def _attempt(self, plan: Plan, step: Step, settings: ModelSettings | None, *, streamed: bool) -> ProviderAttempt:
        model = self.engine.models[step.provider][step.model.name]
        return ProviderAttempt(plan, step, model, settings, streamed=streamed)

    async def _plan(self, messages: list[ModelMessage]) -> Plan:
        plan = await self.engine.plan(pinned=self.pinned)
        rejected = _rejected_provider(messages)
        if rejected is not None and self.pinned is None:
            await self.engine.rejected_output(plan, rejected)
        return plan

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
                    plan, lambda step: self._attempt(plan, step, model_settings, streamed=False),
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
            winner: list[ProviderAttempt] = []

            def start(step: Step) -> ProviderAttempt:
                attempt = self._attempt(plan, step, model_settings, streamed=True)
                winner[:] = [attempt]
                return attempt

            async def open_(attempt: ProviderAttempt) -> StreamedResponse:
                stream = await attempt.open_stream(messages, model_request_parameters, run_context)
                winner[:] = [attempt]
                return stream

            try:
                stream = await self._first_answer(plan, start, open_)
            except BaseException:
                await plan.close()
                raise
            attempt = winner[0]
            try:
                yield stream
            except BaseException:
                await attempt.abandoned("cancelled")  # no-op when the stream already recorded its end
                raise
            finally:
                await attempt.abandoned("closed")
                await attempt.close()
                await plan.close()

    async def _first_answer(self, plan: Plan, start: Callable[[Step], ProviderAttempt],
                            run: Callable[[ProviderAttempt], Awaitable[T]]) -> T:
        """Attempts in the plan's order until one produces its first event (hedged if configured)."""
        if self.engine.hedge.enabled and self.pinned is None:
            return await self._first_answer_hedged(plan, start, run)
        while (step := await plan.next_step()) is not None:
            attempt = start(step)
            try:
                return await run(attempt)
            except asyncio.CancelledError:
                await attempt.abandoned("cancelled")
                raise
            except Exception as error:
                verdict = await attempt.failed(error)
                if not verdict.fall_back:
                    raise
        raise await self.engine.all_failed(plan)

    async def _first_answer_hedged(self, plan: Plan, start: Callable[[Step], ProviderAttempt],
                                   run: Callable[[ProviderAttempt], Awaitable[T]]) -> T:
        """Like `_first_answer`, but a provider slow to its first event gets the next one started beside it."""
        running: dict[asyncio.Task[T], ProviderAttempt] = {}

        async def launch() -> bool:
            step = await plan.next_step()
            if step is None:
                return False
            attempt = start(step)
            running[asyncio.ensure_future(run(attempt))] = attempt
            return True

        async def stop_others(keep: asyncio.Task[T] | None, outcome: str) -> None:
            for task, attempt in list(running.items()):
                if task is keep:
                    continue
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                if not task.cancelled() and task.exception() is None:
                    await attempt.close()  # a twin that answered too late: its stream is not used
                await attempt.abandoned(outcome)
                running.pop(task, None)

        try:
            if not await launch():
                raise await self.engine.all_failed(plan)
            while running:
                delay = None
                if len(running) == 1:
                    (slow,) = running.values()
                    delay = self._hedge_delay(plan, slow)
                done, _ = await asyncio.wait(running, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    (slow,) = running.values()
                    if self.engine.loop_lag.excuses(slow.lag_mark, slow.elapsed()):
                        # Our own loop is what is slow: a hedge would only double the load. Wait on.
                        patience = self.engine.hedge.delay_for(slow.provider) or 0.0
                        await asyncio.wait(running, timeout=patience, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    plan.skip_current_provider()
                    if await launch():
                        hedge = list(running.values())[-1]
                        self.engine.hedged(slow.provider, hedge.provider, delay or 0.0)
                    continue
                for task in done:
                    attempt = running.pop(task)
                    error = task.exception()
                    if error is None:
                        await stop_others(task, "hedge_lost")
                        return task.result()
                    verdict = await attempt.failed(error)
                    if not verdict.fall_back:
                        await stop_others(None, "cancelled")
                        raise error
                if not running and not await launch():
                    break
            raise await self.engine.all_failed(plan)
        except asyncio.CancelledError:
            await stop_others(None, "cancelled")
            raise

    def _hedge_delay(self, plan: Plan, attempt: ProviderAttempt) -> float | None:
        """How long to wait for `attempt`'s first event before hedging; None: no hedge."""
        following = plan.peek_next_candidate()
        if following is None or following.reason == "last_resort":
            return None  # nothing healthy to hedge with (the next provider is cooling)
        delay = self.engine.hedge.delay_for(attempt.provider)
        if delay is None:
            return None
        return max(0.0, delay - attempt.elapsed())


MODEL_FAULTS = frozenset({"validation_error", "unknown_tool", "no_output"})
"""Retry causes that mean the model's reply was unusable (not a tool's own `ModelRetry`)."""


def _rejected_provider(messages: list[ModelMessage]) -> str | None:
    """The provider whose last reply the agent could not use (it is asking again), if any."""
    if len(messages) < 2:
        return None
    last, previous = messages[-1], messages[-2]
    if isinstance(last, ModelRequest) and isinstance(previous, ModelResponse) and any(
            _is_model_fault(part) for part in last.parts):
        return answered_by(previous)
    return None


def _is_model_fault(part: object) -> bool:
    if isinstance(part, RetryPromptPart):
        return True
    retry = getattr(part, "retry", None)
    if isinstance(part, ToolReturnPart) and part.outcome != "retried":
        return False
    return isinstance(part, ToolReturnPart | RetryFeedbackPart) and getattr(retry, "cause", None) in MODEL_FAULTS

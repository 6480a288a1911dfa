"""One provider/model tried for one request, from its start to its real end, recorded once.

The attempt enforces its deadlines itself (`request_timeout` over the whole attempt,
`first_event_timeout` until the first streamed event), so nothing outside it can cancel it
unseen. A streamed attempt's end is the end of the stream: success is recorded when the stream
finishes with a finish reason, and a stream that breaks off (or ends truncated) after its first
event is recorded as the provider's failure and raised as `StreamCutError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx2
from pydantic_ai.exceptions import ModelRequestTimeout, ModelTimeoutError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ThinkingPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.settings import ModelSettings

from .engine import Plan, Step
from .errors import DeadlineExceeded, EmptyReply, FailureKind, StreamCutError, Verdict

METADATA_KEY = "llm_fallback"
"""`response.metadata[METADATA_KEY]` = {"provider": …, "model": …}: who answered."""


def answered_by(response: ModelResponse) -> str | None:
    """The provider that produced `response` (None if it did not come through the fallback model)."""
    info = (response.metadata or {}).get(METADATA_KEY)
    return info.get("provider") if isinstance(info, dict) else None


def _is_empty(response: ModelResponse) -> bool:
    return all(isinstance(p, ThinkingPart) or (isinstance(p, TextPart) and not p.content.strip())
               for p in response.parts)


class ProviderAttempt:
    def __init__(self, plan: Plan, step: Step, model: Model, settings: ModelSettings | None, *, streamed: bool):
        self.plan = plan
        self.step = step
        self.model = model
        self.settings = self._with_short_connect(settings, plan.engine.specs[step.provider].connect_timeout)
        self.streamed = streamed
        self.started = time.monotonic()
        self.lag_mark = plan.engine.loop_lag.begin()
        self.first_event: float | None = None
        self.settled = False
        self.stack = AsyncExitStack()
        request_timeout = (settings or {}).get("request_timeout")
        self.deadline = self.started + request_timeout if request_timeout else None
        self.first_event_timeout = (settings or {}).get("first_event_timeout")

    @staticmethod
    def _with_short_connect(settings: ModelSettings | None, connect: float) -> ModelSettings | None:
        """A caller's `timeout` (seconds) bounds the generation, not the connect: keep ours short."""
        timeout = (settings or {}).get("timeout")
        if isinstance(timeout, int | float):
            return {**settings, "timeout": httpx2.Timeout(timeout, connect=min(timeout, connect))}  # type: ignore[typeddict-item]
        return settings

    @property
    def provider(self) -> str:
        return self.step.provider

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _budget(self, first_event: bool) -> float | None:
        budgets = []
        if self.deadline is not None:
            budgets.append(self.deadline - time.monotonic())
        if first_event and self.first_event_timeout:
            budgets.append(self.started + self.first_event_timeout - time.monotonic())
        return max(0.0, min(budgets)) if budgets else None

    def _stamp(self, target: ModelResponse | StreamedResponse) -> None:
        target.metadata = {**(target.metadata or {}), METADATA_KEY: {"provider": self.provider,
                                                                     "model": self.step.model.name}}

    # -- running

    async def request(self, messages: list[ModelMessage], params: ModelRequestParameters) -> ModelResponse:
        """A non-streamed request; its response is its first event."""
        prepared = self.model.prepare_messages(messages, params)
        try:
            async with asyncio.timeout(self._budget(first_event=False)):
                response = await self.model.request(prepared, self.settings, params)
        except TimeoutError:
            raise DeadlineExceeded(f"no response within the request's deadline ({self.elapsed():.1f}s)") from None
        self.first_event = self.elapsed()
        if _is_empty(response):
            raise EmptyReply("the reply was empty")
        self._stamp(response)
        await self.succeeded()
        return response

    async def open_stream(self, messages: list[ModelMessage], params: ModelRequestParameters,
                          run_context: Any = None) -> StreamedResponse:
        """Open the stream and wait for its first event; the stream then reports its own end."""
        prepared = self.model.prepare_messages(messages, params)
        try:
            async with asyncio.timeout(self._budget(first_event=True)):
                response = await self.stack.enter_async_context(
                    self.model.request_stream(prepared, self.settings, params, run_context))
                events = aiter(response)
                try:
                    first = await anext(events)
                except StopAsyncIteration:
                    raise EmptyReply("the stream ended without any event") from None
        except TimeoutError:
            await self.stack.aclose()
            raise DeadlineExceeded(f"no first event within the deadline ({self.elapsed():.1f}s)") from None
        except BaseException:
            await self.stack.aclose()
            raise
        self.first_event = self.elapsed()
        self._stamp(response)
        # `StreamedResponse.__aiter__` hands out the iterator stored here: the consumer gets the
        # first event again, then the rest through `_observe`, which sees the stream's real end.
        response._event_iterator = self._observe(events, first)
        return response

    async def _observe(self, events: AsyncIterator[Any], first: Any) -> AsyncIterator[Any]:
        yield first
        while True:
            try:
                async with asyncio.timeout(self._budget(first_event=False)):
                    event = await anext(events)
            except StopAsyncIteration:
                break
            except TimeoutError:
                await self._broke_off(DeadlineExceeded(
                    f"the stream stalled past the request's deadline ({self.elapsed():.1f}s)"))
                raise
            except Exception as error:
                await self._broke_off(error)
                raise
            yield event
        await self.succeeded()

    async def _broke_off(self, error: BaseException) -> None:
        """Record a stream that failed after its first event; raise `StreamCutError` if it was the provider."""
        verdict = await self.failed(error)
        if verdict.cool_down:
            raise StreamCutError(self.provider, self.step.model.name, self.plan.engine.describe(error)) from None
        if isinstance(error, DeadlineExceeded):
            raise error

    # -- settling (each attempt exactly once)

    def _settle(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        self.plan.engine.loop_lag.end()
        return True

    async def succeeded(self) -> None:
        if self._settle():
            if self.first_event is not None:
                self.plan.engine.hedge.observe(self.provider, self.first_event)
            await self.plan.succeeded(self.step, seconds=self.elapsed(), first_event=self.first_event,
                                      streamed=self.streamed)

    async def failed(self, error: BaseException) -> Verdict:
        elapsed = self.elapsed()
        excused = (isinstance(error, ModelTimeoutError | ModelRequestTimeout | DeadlineExceeded)
                   and self.plan.engine.loop_lag.excuses(self.lag_mark, elapsed))
        if not self._settle():  # already settled: nothing more to record, raise what came
            return Verdict(FailureKind.UNKNOWN, fall_back=False, cool_down=False)
        return await self.plan.failed(self.step, error, seconds=elapsed, first_event=self.first_event,
                                      streamed=self.streamed, lag_excused=excused)

    async def abandoned(self, outcome: str) -> None:
        """Ended without a verdict: the caller went away (`cancelled`) or a hedged twin won (`hedge_lost`)."""
        elapsed = self.elapsed()
        slow = (outcome == "hedge_lost" and self.first_event is None
                and not self.plan.engine.loop_lag.excuses(self.lag_mark, elapsed))
        if self._settle():
            await self.plan.abandoned(self.step, outcome=outcome, seconds=elapsed, first_event=self.first_event,
                                      streamed=self.streamed, slow=slow)

    async def close(self) -> None:
        await self.stack.aclose()


"""One provider/model tried for one request, from its start to its real end, settled once.

The attempt goes through the model's gate (`providers.ProviderRegistry.gate`: pydantic-ai's
`FallbackModel` over that one model), so pydantic-ai enforces `request_timeout` (over the whole
attempt, a stream through its last chunk) and `first_event_timeout`, and hands a stream over only
once its first event arrived. A streamed attempt's end is the end of its stream: the fallback
model tells it how the consumer left the stream (`stream_ended`), and a stream that broke off
after its first event (cut, stalled past the deadline, or ended without a finish reason) is
recorded as the provider's failure and raised as `StreamCutError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx2
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ThinkingPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.settings import ModelSettings

from .errors import Blame, EmptyReply, FailureKind, StreamCutError, Verdict
from .loop_lag import LoopLagMonitor
from .plan import Plan, Target, Timing

METADATA_KEY = "llm_fallback"
"""`response.metadata[METADATA_KEY]` = {"provider": …, "model": …}: who answered."""


def answered_by(response: ModelResponse) -> str | None:
    """The provider that produced `response` (None if it did not come through the fallback model)."""
    info = (response.metadata or {}).get(METADATA_KEY)
    return info.get("provider") if isinstance(info, dict) else None


def _is_empty(response: ModelResponse) -> bool:
    return all(isinstance(p, ThinkingPart) or (isinstance(p, TextPart) and not p.content.strip())
               for p in response.parts)


def _with_short_connect(settings: ModelSettings | None, connect: float) -> ModelSettings | None:
    """A caller's `timeout` (seconds) bounds the generation, not the connect: keep ours short."""
    timeout = (settings or {}).get("timeout")
    if isinstance(timeout, int | float):
        return {**settings, "timeout": httpx2.Timeout(timeout, connect=min(timeout, connect))}  # type: ignore[typeddict-item]
    return settings


class ProviderAttempt:
    def __init__(self, plan: Plan, target: Target, gate: Model, settings: ModelSettings | None, *, streamed: bool,
                 loop_lag: LoopLagMonitor, connect_timeout: float, describe: Callable[[BaseException], str]):
        self.plan = plan
        self.target = target
        self.gate = gate
        self.settings = _with_short_connect(settings, connect_timeout)
        self.streamed = streamed
        self.loop_lag = loop_lag
        self.describe = describe
        self.started = time.monotonic()
        self.lag_mark = loop_lag.begin()
        self.first_event: float | None = None
        self.settled = False
        self.stack = AsyncExitStack()

    @property
    def provider(self) -> str:
        return self.target.provider

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _stamp(self, target: ModelResponse | StreamedResponse) -> None:
        target.metadata = {**(target.metadata or {}),
                           METADATA_KEY: {"provider": self.provider, "model": self.target.model}}

    # -- running

    async def request(self, messages: list[ModelMessage], params: ModelRequestParameters) -> ModelResponse:
        """A non-streamed request; its response is its first event."""
        response = await self.gate.request(messages, self.settings, params)
        self.first_event = self.elapsed()
        if _is_empty(response):
            raise EmptyReply("the reply was empty")
        self._stamp(response)
        await self.succeeded()
        return response

    async def open_stream(self, messages: list[ModelMessage], params: ModelRequestParameters,
                          run_context: Any = None) -> StreamedResponse:
        """Open the stream; it is handed over with its first event (the gate waited for it)."""
        try:
            stream = await self.stack.enter_async_context(
                self.gate.request_stream(messages, self.settings, params, run_context))
            if not stream.get().parts:
                raise EmptyReply("the stream ended without any event")
        except BaseException:
            await self.stack.aclose()
            raise
        self.first_event = self.elapsed()
        self._stamp(stream)
        return stream

    async def stream_ended(self, stream: StreamedResponse, error: BaseException | None) -> None:
        """The consumer left the stream, normally (`error` None) or with `error` (re-raised by the caller).

        Raises `StreamCutError` when the stream broke off on the provider's side.
        """
        if error is None:
            await (self.succeeded() if stream.get().state == "complete" else self.abandoned("closed"))
        elif isinstance(error, ModelAPIError):  # the provider's side: cut, stalled, or truncated
            verdict = await self.failed(error)
            if verdict.blame is not Blame.NONE:
                raise StreamCutError(self.provider, self.target.model, self.describe(error)) from None
        else:  # the consumer's own error, a Stop, the caller going away: nobody's fault
            await self.abandoned("cancelled")

    # -- settling (each attempt exactly once)

    def _settle(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        self.loop_lag.end()
        return True

    def timing(self) -> Timing:
        return Timing(self.elapsed(), self.first_event, self.streamed)

    async def succeeded(self) -> None:
        if self._settle():
            await self.plan.succeeded(self.target, self.timing())

    async def failed(self, error: BaseException) -> Verdict:
        excused = self.loop_lag.excuses(self.lag_mark, self.elapsed())
        if not self._settle():  # already settled: nothing more to record, raise what came
            return Verdict(FailureKind.UNKNOWN, fall_back=False, blame=Blame.NONE)
        return await self.plan.failed(self.target, error, self.timing(), lag_excused=excused)

    async def abandoned(self, outcome: str, *, timed_out: str | None = None) -> None:
        """Ended without a verdict: the caller went away (`cancelled`/`closed`) or a hedged twin won (`hedge_lost`)."""
        if self._settle():
            await self.plan.abandoned(self.target, outcome, self.timing(), timed_out=timed_out)

    def produced_nothing(self) -> bool:
        """No first event yet, and this process's loop lag does not explain the wait (for hedging)."""
        return self.first_event is None and not self.loop_lag.excuses(self.lag_mark, self.elapsed())

    async def close(self) -> None:
        await self.stack.aclose()

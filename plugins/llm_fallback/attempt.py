"""One provider/model tried for one request, from its start to its real end, settled once.

Only public pydantic-ai API: `Model.prepare_messages`, `Model.request`, `Model.request_stream`,
`StreamedResponse.cancel`, `get` and `time_to_first_chunk`. The deadlines are the attempt's own:

- `first_event_timeout` (and `request_timeout`) bound opening a stream: a model's
  `request_stream` returns once the provider's first chunk has arrived (pydantic-ai's OpenAI and
  function models peek it), so an error or a silence before the first token is raised here,
  while the request can still go to the next provider;
- `request_timeout` bounds the whole attempt (default: the provider's `timeout`, so
  `OLLAMA_TIMEOUT` is what one generation may take, first token to last); on a stream, a timer
  cancels the stream when it passes (`StreamedResponse.cancel()`), and the stream's end reports
  it. A stall between two chunks is the HTTP client's read timeout (the provider's `timeout` too);
- the events of a stream go to the consumer untouched: no per-event cost.

The request is fitted to this model's context window before it is sent (`fit.py`); a provider that
still refuses it as too long gets it again with fewer of the oldest turns (at most `MAX_REFITS`
times, within the same deadlines), as `errors.classify` decides for an overflow.

A streamed attempt's end is the end of its stream: the fallback model tells it how the consumer
left the stream (`stream_ended`), and a stream that broke off after its first chunk (cut,
stalled, past its deadline, or ended without a finish reason) is recorded as the provider's
failure and raised as `StreamCutError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import httpx2
from pydantic_ai.exceptions import ModelAPIError, ModelRequestTimeout
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ThinkingPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

from .errors import Blame, EmptyReply, FailureKind, StreamCutError, Verdict, classify
from .fit import HistoryFit
from .loop_lag import LoopLagMonitor
from .overflow import PromptTooLong
from .plan import Plan, Target, Timing

T = TypeVar("T")

METADATA_KEY = "llm_fallback"
"""`response.metadata[METADATA_KEY]` = {"provider": …, "model": …}: who answered."""
MAX_REFITS = 3
"""Tries of one attempt with fewer turns after its provider refused the prompt as too long."""


def answered_by(response: ModelResponse) -> str | None:
    """The provider that produced `response` (None if it did not come through the fallback model)."""
    info = (response.metadata or {}).get(METADATA_KEY)
    return info.get("provider") if isinstance(info, dict) else None


def _is_empty(response: ModelResponse) -> bool:
    """Nothing in it: no text, no tool call. A content filter's stop is the model's answer (a refusal the
    agent raises as `ContentFilterError`), not an empty reply to strike or fall back from."""
    return response.finish_reason != "content_filter" and all(isinstance(p, ThinkingPart) or (isinstance(p, TextPart) and not p.content.strip())
               for p in response.parts)


def _with_short_connect(settings: ModelSettings | None, connect: float) -> ModelSettings | None:
    """A caller's `timeout` (seconds) bounds the generation, not the connect: keep ours short."""
    timeout = (settings or {}).get("timeout")
    if isinstance(timeout, int | float):
        return {**settings, "timeout": httpx2.Timeout(timeout, connect=min(timeout, connect))}  # type: ignore[typeddict-item]
    return settings


class ProviderAttempt:
    def __init__(self, plan: Plan, target: Target, model: Model, settings: ModelSettings | None, *, streamed: bool,
                 loop_lag: LoopLagMonitor, connect_timeout: float, describe: Callable[[BaseException, str], str],
                 generation_timeout: float | None = None):
        self.plan = plan
        self.target = target
        self.model = model
        self.settings = _with_short_connect(settings, connect_timeout)
        self.streamed = streamed
        self.loop_lag = loop_lag
        self.describe = describe
        self.started = time.monotonic()
        self.lag_mark = loop_lag.begin()
        self.first_event: float | None = None
        self.settled = False
        self.stack = AsyncExitStack()
        self.request_timeout: float | None = (settings or {}).get("request_timeout") or generation_timeout
        self.first_event_timeout: float | None = (settings or {}).get("first_event_timeout")
        self._past_deadline = False

    @property
    def provider(self) -> str:
        return self.target.provider

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _stamp(self, target: ModelResponse | StreamedResponse) -> None:
        target.metadata = {**(target.metadata or {}),
                           METADATA_KEY: {"provider": self.provider, "model": self.target.model}}

    def _timeout(self, *, opening: bool) -> tuple[float | None, str]:
        """Seconds left for this step, and the setting that bounds it."""
        budgets = []
        if self.request_timeout:
            budgets.append((self.request_timeout - self.elapsed(), "request_timeout"))
        if opening and self.first_event_timeout:
            budgets.append((self.first_event_timeout - self.elapsed(), "first_event_timeout"))
        if not budgets:
            return None, ""
        left, setting = min(budgets)
        return max(0.0, left), setting

    def _timed_out(self, setting: str) -> ModelRequestTimeout:
        limit = self.first_event_timeout if setting == "first_event_timeout" else self.request_timeout
        return ModelRequestTimeout(self.model.model_name, limit or 0.0, setting=setting)  # type: ignore[arg-type]

    # -- running

    async def request(self, messages: list[ModelMessage], params: ModelRequestParameters) -> ModelResponse:
        """A non-streamed request; its response is its first event."""
        timeout, setting = self._timeout(opening=False)
        try:
            async with asyncio.timeout(timeout):
                response = await self._fitted(messages, params, lambda fitted: self.model.request(
                    self.model.prepare_messages(fitted, params), self.settings, params))
        except TimeoutError:
            raise self._timed_out(setting) from None
        self.first_event = self.elapsed()
        if _is_empty(response):
            raise EmptyReply("the reply was empty")
        self._stamp(response)
        await self.succeeded(response.usage)
        return response

    async def open_stream(self, messages: list[ModelMessage], params: ModelRequestParameters,
                          run_context: Any = None) -> StreamedResponse:
        """Open the stream: it is handed over once the provider's first chunk arrived."""
        timeout, setting = self._timeout(opening=True)
        try:
            async with asyncio.timeout(timeout):
                stream = await self._fitted(messages, params, lambda fitted: self.stack.enter_async_context(
                    self.model.request_stream(self.model.prepare_messages(fitted, params), self.settings, params,
                                              run_context)))
        except TimeoutError:
            await self.stack.aclose()
            raise self._timed_out(setting) from None
        except BaseException:
            await self.stack.aclose()
            raise
        self.first_event = self.elapsed()
        self._stamp(stream)
        left, _ = self._timeout(opening=False)
        if left is not None:
            timer = asyncio.get_running_loop().call_later(left, self._deadline_passed, stream)
            self.stack.callback(timer.cancel)
        return stream

    async def _fitted(self, messages: list[ModelMessage], params: ModelRequestParameters,
                      send: Callable[[list[ModelMessage]], Awaitable[T]]) -> T:
        """`send` the messages fitted to this model's window; after an overflow, again with fewer turns."""
        fit = HistoryFit(messages, params, self.model.context_window, self.settings, model_name=self.model.model_name)
        fitted = fit.first()
        for refits in range(MAX_REFITS + 1):
            try:
                return await send(fitted)
            except ModelAPIError as error:
                overflow = classify(error).overflow
                if overflow is None or refits == MAX_REFITS:
                    raise
                try:
                    fitted = fit.refit(overflow)
                except PromptTooLong as too_long:  # only the new message is left, and it is still too long
                    raise too_long from error
                self.plan.refitted(self.target, overflow.window, fit.dropped)
        raise AssertionError("unreachable")  # pragma: no cover

    def _deadline_passed(self, stream: StreamedResponse) -> None:
        self._past_deadline = True
        task = asyncio.get_running_loop().create_task(stream.cancel())
        self.stack.push_async_callback(asyncio.gather, task, return_exceptions=True)

    async def stream_ended(self, stream: StreamedResponse, error: BaseException | None) -> bool:
        """The consumer left the stream, normally (`error` None) or with `error` (re-raised by the caller).

        Raises `StreamCutError` when the stream broke off on the provider's side. Returns True when
        the stream ended well but held nothing (no text, no tool call): an empty reply, struck.
        """
        if self._past_deadline and (error is None or isinstance(error, ModelAPIError)):
            error = self._timed_out("request_timeout")  # whatever the cancelled connection raised, it was us
        if error is None:
            response = stream.get()
            if response.state != "complete":
                await self.abandoned("closed")
            elif _is_empty(response):
                await self.failed(EmptyReply("the stream ended without any content"))
                return True
            else:
                await self.succeeded(stream.usage)
        elif isinstance(error, ModelAPIError):  # the provider's side: cut, stalled, or truncated
            verdict = await self.failed(error)
            if verdict.blame is not Blame.NONE:
                raise StreamCutError(self.provider, self.target.model, self.describe(error, self.provider)) from None
            if self._past_deadline:
                raise error
        else:  # the consumer's own error, a Stop, the caller going away: nobody's fault
            await self.abandoned("cancelled")
        return False

    # -- settling (each attempt exactly once)

    def _settle(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        self.loop_lag.end()
        return True

    def timing(self) -> Timing:
        return Timing(self.elapsed(), self.first_event, self.streamed)

    async def succeeded(self, usage: RequestUsage | None = None) -> None:
        if self._settle():
            await self.plan.succeeded(self.target, self.timing(), usage)

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

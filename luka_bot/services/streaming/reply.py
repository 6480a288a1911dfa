"""One streamed reply: run the agent into a preview, restart after a cut, stop on request.

Restart rule: a stream that breaks off after its first token (`StreamCutError`, raised by the
fallback model, which has already recorded the provider as failed) is run again from the
start — same prompt, same history — so the next plan goes to the next provider, and the
preview starts over. Only when no tool with side effects ran during that attempt (running
it twice could act twice; see `agent_factory.tool_has_side_effects`), and at most `attempts`
runs in all (the number of providers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import Any

from pydantic_ai import Agent, CancellationToken, RunContext
from pydantic_ai.exceptions import RunCancelled
from pydantic_ai.messages import AgentStreamEvent, FunctionToolCallEvent, ModelMessage, ModelResponse

from luka_bot.services.task_cancel import cancel_and_wait
from plugins.llm_fallback import LLMFallbackModel, StreamCutError, avoiding

from .preview import Preview

logger = logging.getLogger(__name__)

EventStreamHandler = Callable[[RunContext[Any], AsyncIterable[AgentStreamEvent]], Awaitable[None]]


class ReplyStopped(Exception):
    """The user pressed Stop: `partial` is what was generated so far."""

    def __init__(self, partial: str):
        super().__init__("stopped by the user")
        self.partial = partial


class SideEffectsRan(RuntimeError):
    """A stream broke off after a tool with side effects ran: the reply is not restarted."""


class AnswerCutOff(Exception):
    """The model stopped at its length limit (`finish_reason="length"`): `partial` is all there is."""

    def __init__(self, partial: str):
        super().__init__("the answer reached the model's length limit")
        self.partial = partial


def finished(response: ModelResponse, text: str) -> str:
    """`text`, the whole answer; raises `AnswerCutOff` when the model stopped at its length limit."""
    if response.finish_reason == "length":
        raise AnswerCutOff(text)
    return text


async def stream_reply(agent: Agent[Any, str], prompt: str, history: Sequence[ModelMessage], preview: Preview, *,
                       token: CancellationToken | None, attempts: int,
                       has_side_effects: Callable[[str], bool]) -> str:
    """The complete answer; raises `ReplyStopped`, `SideEffectsRan` or the model's error.

    When every run broke off, that is reported like any request no provider could answer
    (`AllProvidersFailedError`: the "❌ All LLM providers failed!" log line and admin alert).
    """
    cuts: list[StreamCutError] = []
    for attempt in range(1, max(attempts, 1) + 1):
        acted: list[str] = []
        watch_tools = _tools_with_side_effects(acted, has_side_effects)
        if attempt > 1:
            preview.restart()
        try:
            with avoiding(*(cut.provider for cut in cuts)):  # a restart starts on another provider
                async with agent.run_stream(prompt, message_history=list(history), cancellation_token=token,
                                            event_stream_handler=watch_tools) as result:
                    async for delta in result.stream_text(delta=True, debounce_by=None):
                        preview.append(delta)
            return finished(result.response, preview.text)
        except RunCancelled:
            if token is None or not token.cancelled:  # e.g. a run deadline (RunTimedOut): not the user's Stop
                raise
            raise ReplyStopped(preview.text) from None
        except StreamCutError as cut:
            if acted:
                raise SideEffectsRan(f"{cut}; not restarted: {', '.join(acted)} ran") from cut
            cuts.append(cut)
            if attempt >= attempts:
                if isinstance(agent.model, LLMFallbackModel):
                    raise await agent.model.engine.report_all_failed([c.attempt for c in cuts]) from cut
                raise
            logger.warning("↻ Stream from %s/%s broke off after the first token (%s): restarting the reply "
                           "(attempt %d of %d)", cut.provider, cut.model, cut.error, attempt + 1, attempts)
    raise AssertionError("unreachable")  # pragma: no cover


def _tools_with_side_effects(acted: list[str], has_side_effects: Callable[[str], bool]) -> EventStreamHandler:
    """An `event_stream_handler` that notes, in `acted`, each tool with side effects the run calls."""

    async def watch_tools(_: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
        async for event in events:
            if isinstance(event, FunctionToolCallEvent) and has_side_effects(event.part.tool_name):
                acted.append(event.part.tool_name)

    return watch_tools


@contextlib.asynccontextmanager
async def background(coro: Any) -> Any:
    """Run `coro` alongside the block; cancel and collect it afterwards."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        await cancel_and_wait(task)  # a cancel lost inside a Redis call must not hang the reply

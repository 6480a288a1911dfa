"""Whose LLM calls these are, and what they used: each agent run's tokens counted against the user.

While the bot handles a user's message that costs LLM calls, the limits middleware names the
user's tally (`counting_for`): a context variable, because the agents are shared by every
conversation and their runs happen deep inside handlers and tasks the handler starts (the
thread name), which inherit it. Agents built with `CountTokens()` add each run's usage
(`RunContext.usage`, what `result.usage()` reports) to that tally when the run ends, failed and
stopped runs included: their tokens were spent too. Outside such a message (provider probes,
admin checks, group moderation) nothing is counted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.capabilities import WrapRunHandler
from pydantic_ai.run import AgentRunResult

logger = logging.getLogger(__name__)

Tally = Callable[[int], Awaitable[None]]
"""Adds a number of tokens to one user's spend."""

_tally: ContextVar[Tally | None] = ContextVar("luka_user_tally", default=None)


@contextlib.contextmanager
def counting_for(tally: Tally) -> Iterator[None]:
    """Agent runs started in this block (and in tasks it starts) count their tokens with `tally`."""
    token = _tally.set(tally)
    try:
        yield
    finally:
        _tally.reset(token)


class CountTokens(AbstractCapability[Any]):
    """Adds each run's tokens to the tally of the user being served (see module doc); stateless."""

    async def wrap_run(self, ctx: RunContext[Any], *, handler: WrapRunHandler) -> AgentRunResult[Any]:
        tally = _tally.get()
        if tally is None:
            return await handler()
        try:
            return await handler()
        finally:
            tokens = ctx.usage.total_tokens
            if tokens:
                try:
                    await tally(tokens)
                except Exception as error:  # noqa: BLE001 - the answer matters more than the count
                    logger.warning("tokens of one run not counted: %s", type(error).__name__)

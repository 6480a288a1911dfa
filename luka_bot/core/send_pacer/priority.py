"""Which send goes first when the budget is short: the one place callers say what they are sending.

Everything is an answer unless the caller says otherwise (`with sending_as(Priority.FRAME): …`,
a context variable, so it follows the call into the session middleware); a `sendMessageDraft`
(or any `…Draft` method) is a frame whoever sends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import IntEnum
from typing import Any


class Priority(IntEnum):
    ANSWER = 0
    """Final answers, command replies, admin alerts: delivered, retried after a 429, first in line."""
    THREAD_NAME = 1
    """A new thread's name: delivered and retried like an answer, after the answers waiting."""
    FRAME = 2
    """Draft frames, streaming edits: only from what is left, skipped (never waited for) otherwise."""


_current: ContextVar[Priority | None] = ContextVar("send_priority", default=None)


@contextmanager
def sending_as(priority: Priority) -> Iterator[None]:
    """Sends made inside the block (in this task and tasks it starts) have `priority`."""
    token = _current.set(priority)
    try:
        yield
    finally:
        _current.reset(token)


def priority_of(method: Any) -> Priority:
    if type(method).__name__.endswith("Draft"):
        return Priority.FRAME
    return _current.get() or Priority.ANSWER

"""Cancelling a helper task for sure.

redis-py (8.1) can swallow a cancel that lands while a command is in flight, and a task that
loops (a Stop watcher polling Redis, a preview pacing its frames) then simply goes on: a single
`cancel()` followed by an unbounded wait hangs the reply that owns it. So: cancel, wait a
little, cancel again, and after `give_up_after` stop waiting (its outcome is still collected).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any], *, every: float = 0.5, give_up_after: float = 5.0) -> None:
    """Cancel `task` until it is done (re-cancelling every `every` s); at most `give_up_after` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.done():
        logger.warning("task %s did not stop; going on without it", task.get_name())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    elif not task.cancelled():
        task.exception()  # retrieved: never "Task exception was never retrieved"

"""A helper task whose cancel is swallowed (as redis-py can inside a command) must not hang a reply."""

from __future__ import annotations

import asyncio

from luka_bot.services.task_cancel import cancel_and_wait


async def test_a_swallowed_cancel_is_repeated_until_the_task_stops():
    swallowed = 0

    async def poller() -> None:  # like the Stop watcher: polls, and its first cancel is lost
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed == 0:
                    swallowed += 1
                    continue  # lost, as inside a Redis command
                raise

    task = asyncio.create_task(poller())
    await asyncio.sleep(0.02)
    await asyncio.wait_for(cancel_and_wait(task, every=0.05), timeout=2)
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_never_stops_is_given_up_on_without_hanging(caplog):
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.wait_for(cancel_and_wait(task, every=0.02, give_up_after=0.1), timeout=2)
    assert not task.done() and "did not stop" in caplog.text
    stop.set()
    await task

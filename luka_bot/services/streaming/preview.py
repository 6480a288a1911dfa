"""The reply as it is generated, shown in the chat at most every `interval` seconds.

The model's text is appended as it streams (`append`, cheap, never waits for Telegram); a
background task sends the newest text as one frame when the interval has passed, skipping
the frames in between (as grammY's stream plugin does). The first frame waits
`FIRST_FRAME_DELAY` (at most one interval): a reply complete by then needs no draft. Frames are
sent as `Priority.FRAME` (the send pacer sends them only from spare budget and skips them
otherwise); a skip or a 429 pauses the frames for `retry_after` and the next frame carries the
newest text: a draft is only a preview, so nothing is lost. A refused method moves the preview one mode down
(`StreamCapabilities`). `close()` never waits for a pause: only a frame already in flight
is awaited, so that it cannot land after the final message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiogram.exceptions import ClientDecodeError, TelegramAPIError, TelegramRetryAfter

from luka_bot.core.send_pacer import FrameSkipped, Priority, sending_as
from luka_bot.services.task_cancel import cancel_and_wait

from .capabilities import FrameError, describe, is_refusal
from .frames import Frames

logger = logging.getLogger(__name__)

Refused = Callable[[Frames, FrameError], Frames | None]
FIRST_FRAME_DELAY = 0.25
"""Seconds from the first token to the first frame (at most one interval): a reply complete by
then goes out as one message, without a draft call that would be replaced milliseconds later."""
IN_FLIGHT_WAIT = 5.0
"""Seconds `close()` waits for a frame already sent to be answered, before giving up on it."""


class Preview:
    def __init__(self, frames: Frames | None, interval: float, *, on_refused: Refused,
                 first_delay: float = FIRST_FRAME_DELAY, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.frames = frames
        self.interval = interval
        self.on_refused = on_refused
        self.clock = clock
        self.sleep = sleep
        self.first_delay = min(first_delay, interval)
        self._parts: list[str] = []
        self._shown: str | None = None
        self._next_at = 0.0
        self._changed = asyncio.Event()
        self._in_flight = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def append(self, delta: str) -> None:
        self._parts.append(delta)
        self._changed_now()

    def restart(self) -> None:
        """Start over (a new attempt): the next frame is empty, i.e. Telegram's placeholder."""
        self._parts.clear()
        self._changed_now()

    def _changed_now(self) -> None:
        if self.frames is None or self._closing:
            return
        self._changed.set()
        if self._task is None:
            self._next_at = self.clock() + self.first_delay
            self._task = asyncio.create_task(self._pump(), name="reply-preview")

    async def close(self) -> Frames | None:
        """Stop showing frames; returns the frames (the final message may take over an edited one)."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            if not self._in_flight:
                task.cancel()
            await asyncio.wait({task}, timeout=IN_FLIGHT_WAIT)
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.warning("reply preview ended: %r", task.exception())
            await cancel_and_wait(task, give_up_after=1.0)  # never hold back the final answer
        return self.frames

    async def _pump(self) -> None:
        with sending_as(Priority.FRAME):  # this task only sends frames
            await self._pump_frames()

    async def _pump_frames(self) -> None:
        while not self._closing and self.frames is not None:
            await self._changed.wait()
            self._changed.clear()
            if (delay := self._next_at - self.clock()) > 0:
                await self.sleep(delay)
            text = self.text
            if text == self._shown:
                continue
            await self._send(self.frames, text)

    async def _send(self, frames: Frames, text: str) -> None:
        self._in_flight = True
        try:
            await frames.send(text)
            self._shown = text
            self._next_at = self.clock() + self.interval
        except TelegramRetryAfter as error:
            if not isinstance(error, FrameSkipped):  # a skip is routine under load: not worth a line
                logger.info("Telegram flood control on %s frames: next frame in %ss", frames.mode, error.retry_after)
            self._next_at = self.clock() + error.retry_after
            self._changed.set()  # then show the newest text
        except (TelegramAPIError, ClientDecodeError) as error:
            if is_refusal(error):
                self.frames = self.on_refused(frames, error)
                self._shown = None
                self._changed.set()
            else:  # this frame is lost, the next one carries the newest text
                logger.info("a %s frame was not shown: %s", frames.mode, describe(error))
                self._next_at = self.clock() + self.interval
        finally:
            self._in_flight = False

"""The send pacer in process, on virtual time: pacing, priorities, frames, 429 scopes, the shared budget.

`PacedSends` (the session middleware) runs with a fake `make_request` that records when each
send reached "Telegram" and can answer 429; time is virtual (`VirtualTime`: sleepers wake in
order when the test runs the clock), so nothing here waits for real. The budget's Redis tests
use a real redis-server.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import EditMessageText, SendChatAction, SendMessage, SendMessageDraft, TelegramMethod

from luka_bot.core.send_pacer import (
    FloodPauses,
    FrameSkipped,
    Limits,
    PacedSends,
    Priority,
    SendBudget,
    SendNotDelivered,
    SendPacer,
    Scope,
    sending_as,
)
from plugins.llm_fallback import RedisOptions, SharedRedis, connect_redis
from tests.fakes.redis_server import RedisServer

T0 = 1_700_000_000.0
BOT = Bot("42:TEST-pacer-token-not-real")


class VirtualTime:
    """A clock and a `sleep` for it: sleepers wake in time order when `run()` moves the clock."""

    def __init__(self) -> None:
        self.now = T0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._seq), future))
        await future

    async def run(self, until: float | None = None) -> None:
        """Let every task run, waking sleepers in order, until nothing is left to do (or `until`)."""
        while True:
            for _ in range(50):
                await asyncio.sleep(0)
            if not self._sleepers:
                self.now = max(self.now, until or self.now)
                return
            wake, _, future = self._sleepers[0]
            if until is not None and wake > until:
                self.now = until
                return
            heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            future.set_result(None)


@dataclass
class Telegram:
    """The fake `make_request`: records (method name, chat, time); `flood[chat]` = retry_afters to answer."""

    time: VirtualTime
    sent: list[tuple[str, Any, float]] = field(default_factory=list)
    flood: dict[Any, list[int]] = field(default_factory=dict)

    async def __call__(self, bot: Bot, method: TelegramMethod[Any]) -> Any:
        chat = getattr(method, "chat_id", None)
        if self.flood.get(chat):
            raise TelegramRetryAfter(method, "Too Many Requests", self.flood[chat].pop(0))
        self.sent.append((type(method).__name__, chat, self.time.now - T0))
        return True

    def times(self, chat: Any = None, method: str = "SendMessage") -> list[float]:
        return [round(at, 3) for name, c, at in self.sent if name == method and (chat is None or c == chat)]


@pytest.fixture
def time() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def telegram(time: VirtualTime) -> Telegram:
    return Telegram(time)


def paced(time: VirtualTime, limits: Limits = Limits(), deadline: float = 300.0) -> PacedSends:
    return PacedSends(SendPacer(limits, clock=time, sleep=time.sleep), deadline=deadline, clock=time)


def message(chat: int, text: str = "answer") -> SendMessage:
    return SendMessage(chat_id=chat, text=text)


def spawn(middleware: PacedSends, telegram: Telegram, method: TelegramMethod[Any],
          priority: Priority | None = None) -> asyncio.Task[Any]:
    async def send() -> Any:
        if priority is None:
            return await middleware(telegram, BOT, method)
        with sending_as(priority):
            return await middleware(telegram, BOT, method)

    return asyncio.create_task(send())


# --- pacing ---------------------------------------------------------------------------------------


async def test_sends_go_out_at_the_overall_rate_after_a_burst(time: VirtualTime, telegram: Telegram) -> None:
    middleware = paced(time)
    tasks = [spawn(middleware, telegram, message(chat)) for chat in range(1, 91)]
    await time.run()
    await asyncio.gather(*tasks)
    times = telegram.times()
    assert len(times) == 90
    assert times[:20] == [0.0] * 20, "the bucket is full at rest: a burst of 20"
    expected = [round((i + 1) / 30, 3) for i in range(70)]
    assert times[20:] == pytest.approx(expected, abs=0.005), "then one every 1/30 s (to the millisecond)"


async def test_one_chat_gets_a_burst_of_three_then_one_a_second(time: VirtualTime, telegram: Telegram) -> None:
    middleware = paced(time)

    async def answer_six_times() -> None:
        for _ in range(6):
            await middleware(telegram, BOT, message(7))

    task = asyncio.create_task(answer_six_times())
    await time.run()
    await task
    assert telegram.times(7) == pytest.approx([0, 0, 0, 1, 2, 3], abs=0.002)


async def test_a_group_is_held_to_its_per_minute_rate(time: VirtualTime, telegram: Telegram) -> None:
    middleware = paced(time, Limits(group_per_minute=20))

    async def post_five() -> None:
        for _ in range(5):
            await middleware(telegram, BOT, message(-100))

    task = asyncio.create_task(post_five())
    await time.run()
    await task
    assert telegram.times(-100) == pytest.approx([0, 0, 0, 3, 6], abs=0.005), "20/min = one every 3 s after 3"


# --- priorities -----------------------------------------------------------------------------------


async def test_answers_waiting_go_before_thread_names_waiting(time: VirtualTime, telegram: Telegram) -> None:
    middleware = paced(time, Limits(per_second=10, burst=1))
    first = spawn(middleware, telegram, message(1))  # takes the only token
    names = [spawn(middleware, telegram, message(chat, "🧵 name"), Priority.THREAD_NAME) for chat in range(2, 5)]
    await time.run(until=T0)  # the names are queued first...
    answers = [spawn(middleware, telegram, message(chat)) for chat in range(5, 8)]
    await time.run()
    await asyncio.gather(first, *names, *answers)
    order = [chat for name, chat, _ in telegram.sent]
    assert order == [1, 5, 6, 7, 2, 3, 4], "...but every answer waiting goes first, then the names in order"


async def test_a_frame_is_skipped_while_answers_wait_and_never_delays_one(
    time: VirtualTime, telegram: Telegram
) -> None:
    middleware = paced(time)
    answers = [spawn(middleware, telegram, message(chat)) for chat in range(100, 140)]  # 40: a queue forms
    await time.run(until=T0)
    with pytest.raises(FrameSkipped) as skipped:
        await middleware(telegram, BOT, SendMessageDraft(chat_id=1, draft_id=1, text="partial"))
    assert 0 < skipped.value.retry_after <= 1, "skipped, not waited for: the next frame comes a little later"
    with sending_as(Priority.FRAME):  # a streaming edit is a frame too
        with pytest.raises(FrameSkipped):
            await middleware(telegram, BOT, EditMessageText(chat_id=1, message_id=5, text="partial"))
    await time.run()
    await asyncio.gather(*answers)
    assert telegram.times(method="SendMessageDraft") == [] and telegram.times(method="EditMessageText") == []

    # Idle again (the overall bucket full after a second): a frame goes, and the thread name and
    # answer right after it do not wait.
    await time.run(until=time.now + 1)
    start = round(time.now - T0, 3)
    await middleware(telegram, BOT, SendMessageDraft(chat_id=1, draft_id=1, text="partial"))
    name = spawn(middleware, telegram, message(1, "🧵 name"), Priority.THREAD_NAME)
    await time.run()
    await name
    await middleware(telegram, BOT, message(1))
    assert telegram.times(1) == [start, start], "the chat's budget kept two tokens for the name and the answer"


async def test_a_frame_needs_a_full_chat_bucket(time: VirtualTime, telegram: Telegram) -> None:
    middleware = paced(time)
    await middleware(telegram, BOT, message(3))  # the chat has 2 of 3 tokens left
    with pytest.raises(FrameSkipped):
        await middleware(telegram, BOT, SendMessageDraft(chat_id=3, draft_id=9, text="partial"))
    await time.run(until=T0 + 0.9)
    with pytest.raises(FrameSkipped):
        await middleware(telegram, BOT, SendMessageDraft(chat_id=3, draft_id=9, text="partial"))
    await time.run(until=T0 + 1.0)
    await middleware(telegram, BOT, SendMessageDraft(chat_id=3, draft_id=9, text="partial"))
    assert telegram.times(3, "SendMessageDraft") == [1.0]


async def test_typing_takes_no_budget(time: VirtualTime, telegram: Telegram) -> None:
    middleware = paced(time, Limits(per_second=1, burst=1, chat_burst=1))
    await middleware(telegram, BOT, message(4))  # both buckets are empty now
    for _ in range(3):
        assert await middleware(telegram, BOT, SendChatAction(chat_id=4, action="typing")) is True
    assert telegram.times(4, "SendChatAction") == [0, 0, 0]


# --- 429 ------------------------------------------------------------------------------------------


async def test_a_429_in_one_chat_pauses_that_chat_only(time: VirtualTime, telegram: Telegram,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    middleware = paced(time)
    telegram.flood[1] = [3]
    with caplog.at_level(logging.INFO, logger="luka_bot"):
        flooded = spawn(middleware, telegram, message(1))
        await time.run(until=T0 + 0.5)
        other = spawn(middleware, telegram, message(2))
        await time.run()
        await asyncio.gather(flooded, other)
    assert telegram.times(2) == [0.5], "another chat is not paused"
    assert telegram.times(1) == [3.0], "retried after retry_after"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "429 on SendMessage in chat 1, retry after 3s; pausing that chat" in warnings[0]
    assert any("flood control episode over" in r.getMessage() for r in caplog.records)
    assert all(r.exc_info is None for r in caplog.records)


async def test_429s_in_two_chats_pause_every_chat(time: VirtualTime, telegram: Telegram,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    middleware = paced(time)
    telegram.flood[1] = [5]
    telegram.flood[2] = [4]
    with caplog.at_level(logging.INFO, logger="luka_bot"):
        first = spawn(middleware, telegram, message(1))
        second = spawn(middleware, telegram, message(2))
        await time.run(until=T0 + 1)
        others = [spawn(middleware, telegram, message(chat)) for chat in (3, 4, 5)]
        await time.run()
        await asyncio.gather(first, second, *others)
    assert min(at for _, _, at in telegram.sent) >= 5.0, "nothing goes before the longest retry_after"
    assert sorted(chat for _, chat, _ in telegram.sent) == [1, 2, 3, 4, 5]
    assert [r.levelno for r in caplog.records].count(logging.WARNING) == 1, "one WARNING per flood episode"


async def test_an_answer_is_retried_until_delivered_or_its_deadline(time: VirtualTime, telegram: Telegram,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    middleware = paced(time, deadline=350)
    telegram.flood[9] = [100, 100, 100, 100]
    task = spawn(middleware, telegram, message(9))
    with caplog.at_level(logging.INFO, logger="luka_bot"):
        await time.run()
        with pytest.raises(SendNotDelivered):
            await task
    assert telegram.flood[9] == [], "tried at 0, 100, 200 and 300 s"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["❌ Telegram flood control: SendMessage to chat 9 not delivered within 350s (retry after "
                      "100s); given up"]

    telegram.flood[9] = [2, 2, 2]
    task = spawn(middleware, telegram, message(9))
    await time.run()
    await task
    assert len(telegram.times(9)) == 1, "three 429s, then delivered"


async def test_a_frame_429_pauses_no_answer(time: VirtualTime, telegram: Telegram) -> None:
    middleware = paced(time)
    telegram.flood[6] = [30]
    with pytest.raises(TelegramRetryAfter):
        await middleware(telegram, BOT, SendMessageDraft(chat_id=6, draft_id=1, text="partial"))
    await middleware(telegram, BOT, message(6))
    assert telegram.times(6) == [0.0], "the preview pauses its frames; the answer goes at once"


# --- one budget per bot ---------------------------------------------------------------------------


def _shared(url: str) -> SharedRedis:
    return SharedRedis(connect_redis(RedisOptions(url=url, socket_timeout=0.5)), retry_interval=60)


async def _admitted(budgets: list[SendBudget], key: str, attempts: int) -> int:
    taken = 0
    for i in range(attempts):
        budget = budgets[i % len(budgets)]
        taken += await budget.take(key, budget.limits.overall()) == 0
    return taken


async def test_replicas_on_one_redis_spend_one_budget(redis_url: str, time: VirtualTime) -> None:
    shared = [_shared(redis_url), _shared(redis_url)]
    replicas = [SendBudget(Limits(), clock=time) for _ in shared]
    other_bot = SendBudget(Limits(), clock=time)
    try:
        for budget, redis in zip(replicas, shared, strict=True):
            budget.share(redis, "luka:42:send:")
        other_bot.share(shared[0], "luka:43:send:")
        assert await _admitted(replicas, "all", 60) == 20, "two replicas, one bucket of 20"
        assert await replicas[0].take("all", Limits().overall()) == pytest.approx(1 / 30, abs=0.002)
        assert await _admitted([other_bot], "all", 20) == 20, "another bot (token) has its own budget"
        assert replicas[0].scope == "bot"
    finally:
        for redis in shared:
            await redis.client.aclose()


async def test_a_bot_wide_pause_holds_every_replica(redis_url: str, time: VirtualTime) -> None:
    shared = [_shared(redis_url), _shared(redis_url)]
    replicas = [FloodPauses(clock=time) for _ in shared]
    try:
        for pauses, redis in zip(replicas, shared, strict=True):
            pauses.share(redis, "luka:42:send:")
        assert await replicas[0].flooded(1, 4, "SendMessage") is Scope.CHAT
        assert await replicas[1].bot_wide() == 0, "a chat's pause stays with the replica that met it"
        assert await replicas[0].flooded(2, 6, "SendMessage") is Scope.BOT
        assert await replicas[1].bot_wide() == pytest.approx(6, abs=0.01), "every replica holds"
        assert replicas[1].local(99) == pytest.approx(6, abs=0.01)
    finally:
        for redis in shared:
            await redis.client.aclose()


async def test_without_redis_each_process_paces_at_the_full_rate(own_redis: RedisServer, time: VirtualTime,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    redis = _shared(own_redis.url)
    budget = SendBudget(Limits(), clock=time)
    budget.share(redis, "luka:42:send:")
    try:
        assert await _admitted([budget], "all", 10) == 10
        own_redis.kill()
        with caplog.at_level(logging.ERROR):
            assert await _admitted([budget], "all", 40) == 20, "local: a full bucket, never stopped"
        assert budget.scope == "process"
        assert sum("Redis state store unavailable" in r.getMessage() for r in caplog.records) == 1
        assert all(r.exc_info is None for r in caplog.records)
    finally:
        await redis.client.aclose()


def test_limits_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from luka_bot.core.config import load_settings
    from luka_bot.core.send_pacer import paced_sends

    settings = load_settings(_env_file=None, BOT_TOKEN="42:x", TELEGRAM_SENDS_PER_SECOND=20, TELEGRAM_SENDS_BURST=5,
                             TELEGRAM_CHAT_SENDS_PER_SECOND=0.5, TELEGRAM_CHAT_BURST=2,
                             TELEGRAM_GROUP_SENDS_PER_MINUTE=10, TELEGRAM_SEND_DEADLINE=120)
    middleware = paced_sends(settings)
    assert middleware.pacer.limits == Limits(20, 5, 0.5, 2, 10)
    assert middleware.deadline == 120


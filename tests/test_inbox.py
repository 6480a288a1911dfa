"""The durable inbox in one process, against a real redis-server: record, order, claim, duplicates, outages.

Each `Node` is one bot process as the inbox sees it: its own consumer name, its own `SharedRedis`,
a real aiogram `Dispatcher` whose message handler waits on a per-message gate (a reply in flight)
and notes the order it answered in. A process "dies" by simply being abandoned (it refreshes
nothing any more); time that passes for Redis's idle clock is set with `XCLAIM … IDLE` through
the inbox's own `refresh(idle_ms=…)`, never slept through. End-to-end kills of the real bot
process: tests/test_inbox_polling.py and tests/test_inbox_replicas.py.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.methods import SendMessage
from aiogram.types import Message, Update
from redis.asyncio import Redis

from luka_bot.core.config import load_settings
from luka_bot.core.i18n import build_i18n
from luka_bot.services.inbox import (
    DUPLICATE,
    Inbox,
    InboxMiddleware,
    InboxStats,
    Keeper,
    QuoteLateAnswers,
    RedisInboxLog,
    read_inbox_stats,
)
from luka_bot.services.inbox.telegram import Handling
from plugins.llm_fallback import SharedRedis
from tests.conftest import FakeClock
from tests.conftest import wait_until as _wait_until
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

PREFIX = "luka:42:"
ORPHAN_AFTER = 30.0
update_ids = itertools.count(1000)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Until `predicate()` holds: Redis round trips take real (loopback) time, so poll every 10 ms, ≤ 5 s."""
    await _wait_until(predicate, rounds=500, interval=0.01)


def message(chat_id: int, text: str, *, user_id: int | None = None, group: bool = False, date: int = 0,
            update_id: int | None = None) -> Update:
    user = user_id or chat_id
    chat = {"id": chat_id, "type": "supergroup", "title": "G"} if group else {"id": chat_id, "type": "private"}
    return Update.model_validate({"update_id": update_id or next(update_ids), "message": {
        "message_id": next(update_ids), "date": date, "chat": chat,
        "from": {"id": user, "is_bot": False, "first_name": "U"}, "text": text}})


@dataclass
class Node:
    """One bot process: inbox, keeper, dispatcher; `answered` lists the texts in the order answered."""

    inbox: Inbox
    keeper: Keeper | None
    dp: Dispatcher
    bot: Bot
    answered: list[str] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)

    def gate(self, text: str) -> asyncio.Event:
        return self.gates.setdefault(text, asyncio.Event())

    async def receive(self, *updates: Update) -> list[Any]:
        """As the polling middleware: record the batch, then hand every update to the dispatcher."""
        outcomes = await self.inbox.accept(list(updates))
        for update in updates:
            asyncio.create_task(self.dp.feed_update(self.bot, update))
        return outcomes


def build_node(shared: SharedRedis | None, consumer: str, *, monotonic: FakeClock | None = None,
               max_backlog: int = 100) -> Node:
    log = RedisInboxLog(shared.client, prefix=PREFIX, consumer=consumer) if shared else None
    inbox = Inbox(log, shared, orphan_after=ORPHAN_AFTER, max_backlog=max_backlog,
                  monotonic=monotonic or FakeClock(1000.0))
    dp = Dispatcher()
    dp.update.outer_middleware(InboxMiddleware(inbox, limit=8))
    bot = Bot("42:TEST")
    node = Node(inbox, None, dp, bot)
    handling = Handling(dp, inbox)
    handling.bot = bot
    if log is not None:
        node.keeper = Keeper(inbox, log, handling.start_entry)

    @dp.message()
    async def answer(event: Message) -> None:
        text = event.text or ""
        node.started.append(text)
        await node.gate(text).wait()
        node.answered.append(text)

    return node


@pytest.fixture
async def cluster(redis_url: str) -> AsyncIterator[Callable[..., Node]]:
    """`cluster("a")`: a new process on the test's Redis."""
    clients: list[Redis] = []
    nodes: list[Node] = []

    def make(consumer: str, **options: Any) -> Node:
        client = Redis.from_url(redis_url, decode_responses=True, socket_timeout=0.5)
        clients.append(client)
        shared = SharedRedis(client, retry_interval=5.0, monotonic=FakeClock(1000.0))
        nodes.append(build_node(shared, consumer, **options))
        return nodes[-1]

    yield make
    await release(*nodes)
    for client in clients:
        await client.aclose(close_connection_pool=True)


async def release(*nodes: Node) -> None:
    """Let every handler still waiting finish (a dead process's tasks, in this one event loop)."""
    for node in nodes:
        for gate in node.gates.values():
            gate.set()
    for _ in range(50):
        await asyncio.sleep(0)


async def age(node: Node, seconds: float) -> None:
    """Redis sees `node`'s entries idle for `seconds` (its process stopped refreshing them that long ago)."""
    assert node.inbox.log is not None
    ids = [e.stream_id for e in node.inbox.unfinished if e.stream_id]
    await node.inbox.log.refresh(ids, idle_ms=int(seconds * 1000))


# --- recording and answering ---------------------------------------------------------------------------


async def test_a_message_stays_in_redis_from_receipt_until_its_answer(cluster: Callable[[str], Node]) -> None:
    node = cluster("a")
    (entry,) = await node.receive(message(1, "hello"))
    assert entry.durable and entry.first_in_line
    assert (await node.inbox.stats()).pending == 1
    await wait_until(lambda: node.started == ["hello"])
    assert (await node.inbox.stats()).pending == 1, "being answered is not answered"
    node.gate("hello").set()
    await wait_until(lambda: node.answered == ["hello"])
    await wait_until(lambda: not node.inbox.unfinished)
    stats = await node.inbox.stats()
    assert (stats.pending, stats.oldest_seconds, stats.kind, stats.durable) == (0, None, "redis", True)


async def test_the_same_update_twice_is_answered_once(cluster: Callable[[str], Node]) -> None:
    """Telegram sends a webhook update again when its 200 got lost; a restarted poller gets unconfirmed ones."""
    first, second = cluster("a"), cluster("b")
    update = message(1, "once")
    first.gate("once").set()
    second.gate("once").set()
    (entry,) = await first.receive(update)
    assert entry.durable
    assert await second.receive(update) == [DUPLICATE]  # another replica, even while the first still answers
    assert await first.receive(update) == [DUPLICATE]
    await wait_until(lambda: first.answered == ["once"] and not first.inbox.unfinished)
    assert await second.receive(update) == [DUPLICATE]  # and after the answer
    for _ in range(20):
        await asyncio.sleep(0)
    assert first.answered == ["once"] and second.answered == []


async def test_a_chats_second_message_waits_for_its_first(cluster: Callable[[str], Node]) -> None:
    node = cluster("a")
    await node.receive(message(1, "first"), message(1, "second"), message(2, "other chat"))
    await wait_until(lambda: set(node.started) == {"first", "other chat"})
    node.gate("second").set()
    node.gate("other chat").set()
    await wait_until(lambda: node.answered == ["other chat"])
    assert node.started == ["first", "other chat"], "the second waits for the first, the other chat does not"
    node.gate("first").set()
    await wait_until(lambda: node.answered == ["other chat", "first", "second"])


async def test_in_a_group_each_member_keeps_their_order_without_holding_up_the_others(
        cluster: Callable[[str], Node]) -> None:
    node = cluster("a")
    group = -100
    await node.receive(message(group, "ann 1", user_id=11, group=True), message(group, "ann 2", user_id=11, group=True),
                       message(group, "bob 1", user_id=12, group=True))
    await wait_until(lambda: sorted(node.started) == ["ann 1", "bob 1"])
    node.gate("bob 1").set()
    node.gate("ann 2").set()
    await wait_until(lambda: node.answered == ["bob 1"])
    node.gate("ann 1").set()
    await wait_until(lambda: node.answered == ["bob 1", "ann 1", "ann 2"])


async def test_waiting_for_a_turn_takes_no_slot(cluster: Callable[[str], Node]) -> None:
    """One user's many messages wait in their line; other users still get the 8 slots."""
    node = cluster("a")
    await node.receive(*(message(1, f"spam {i}") for i in range(20)))
    await node.receive(*(message(100 + i, f"user {i}") for i in range(7)))
    await wait_until(lambda: len(node.started) == 8)
    assert sorted(node.started) == sorted(["spam 0", *(f"user {i}" for i in range(7))])


# --- another process takes over ------------------------------------------------------------------------


async def test_a_stopped_process_entries_are_claimed_and_answered_in_chat_order(
        cluster: Callable[[str], Node]) -> None:
    dead, alive = cluster("dead"), cluster("alive")
    await dead.receive(message(1, "q1"), message(1, "q2"), message(2, "other"))
    await wait_until(lambda: sorted(dead.started) == ["other", "q1"])  # then the process is killed
    (late,) = await alive.receive(message(1, "q3"))  # the chat writes again, to the survivor
    assert late.durable and not late.first_in_line
    for text in ("q1", "q2", "q3", "other"):
        alive.gate(text).set()
    assert alive.keeper is not None
    await alive.keeper.tick()
    assert alive.inbox.claimed_total == 0, "entries of a live-looking process are not taken"
    await age(dead, ORPHAN_AFTER + 1)
    assert await alive.keeper.claim() == 3
    await wait_until(lambda: len(alive.answered) == 4)
    chat_1 = [text for text in alive.answered if text.startswith("q")]
    assert chat_1 == ["q1", "q2", "q3"], alive.answered
    await wait_until(lambda: not alive.inbox.unfinished)
    assert (await alive.inbox.stats()).pending == 0
    assert alive.inbox.claimed_total == 3


async def test_a_full_backlog_waiting_for_a_stopped_process_still_claims_its_entries(
        cluster: Callable[..., Node]) -> None:
    """The restarted bot's backlog fills with chats' next messages, all waiting for the first ones the
    killed process held: claiming those must not wait for room, or nothing would ever move."""
    dead, restarted = cluster("dead"), cluster("restarted", max_backlog=2)
    await dead.receive(message(1, "first of 1"), message(2, "first of 2"))
    await restarted.receive(message(1, "next of 1"), message(2, "next of 2"))
    assert len(restarted.inbox.unfinished) == restarted.inbox.max_backlog
    for text in ("first of 1", "first of 2", "next of 1", "next of 2"):
        restarted.gate(text).set()
    await age(dead, ORPHAN_AFTER + 1)
    assert restarted.keeper is not None and await restarted.keeper.claim() == 2
    await wait_until(lambda: len(restarted.answered) == 4)
    assert restarted.answered.index("first of 1") < restarted.answered.index("next of 1")


async def test_a_live_process_keeps_its_slow_replies(cluster: Callable[[str], Node]) -> None:
    """However long a reply takes, its process refreshes it: nobody else answers it too."""
    slow, other = cluster("slow"), cluster("other")
    await slow.receive(message(1, "long answer"))
    await wait_until(lambda: slow.started == ["long answer"])
    assert slow.keeper is not None and other.keeper is not None and slow.inbox.log is not None
    await age(slow, ORPHAN_AFTER - 1)  # a quarter-bound tick is due
    await slow.keeper.tick()
    (pending,) = await slow.inbox.log.client.xpending_range(slow.inbox.log.stream, "bots", "-", "+", 10)
    assert pending["consumer"] == "slow" and pending["time_since_delivered"] < 1000, pending
    assert await other.keeper.claim() == 0
    slow.gate("long answer").set()
    await wait_until(lambda: slow.answered == ["long answer"] and not slow.inbox.unfinished)
    assert other.answered == []


async def test_entries_handed_back_at_shutdown_are_claimed_at_once(cluster: Callable[[str], Node]) -> None:
    leaving, staying = cluster("leaving"), cluster("staying")
    await leaving.receive(message(1, "unanswered"))
    await wait_until(lambda: leaving.started == ["unanswered"])
    assert leaving.keeper is not None and staying.keeper is not None
    assert await leaving.keeper.hand_back() == 1
    staying.gate("unanswered").set()
    assert await staying.keeper.claim() == 1
    await wait_until(lambda: staying.answered == ["unanswered"])


async def test_an_update_that_keeps_killing_its_process_is_given_up(
        cluster: Callable[[str], Node], caplog: pytest.LogCaptureFixture) -> None:
    nodes = [cluster(f"p{i}") for i in range(7)]
    await nodes[0].receive(message(1, "poison"))
    for previous, node in itertools.pairwise(nodes):
        await age(previous, ORPHAN_AFTER + 1)
        assert node.keeper is not None
        await node.keeper.claim()
    assert [n.inbox.claimed_total for n in nodes] == [0, 1, 1, 1, 1, 0, 0]
    assert "given up, not answered" in caplog.text
    await wait_until(lambda: not nodes[-1].inbox.unfinished)
    assert (await nodes[-1].inbox.stats()).pending == 0


# --- Redis not answering --------------------------------------------------------------------------------


async def test_while_redis_is_paused_telegram_confirmation_waits_for_the_answer(own_redis: RedisServer) -> None:
    client = Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=0.3)
    node = build_node(SharedRedis(client, retry_interval=5.0, monotonic=FakeClock(1000.0)), "a")
    try:
        own_redis.pause()
        update = message(1, "while paused")
        (entry,) = await node.receive(update)
        assert not entry.durable and entry.holds_confirmation
        assert node.inbox.kind == "degraded" and (await node.inbox.stats()).kind == "degraded"
        confirm = asyncio.create_task(node.inbox.ready_to_confirm(update.update_id + 1))
        await wait_until(lambda: node.started == ["while paused"])
        await asyncio.sleep(0)
        assert not confirm.done(), "Telegram keeps the update until it is answered"
        node.gate("while paused").set()
        await asyncio.wait_for(confirm, 5)
        assert node.answered == ["while paused"]
    finally:
        own_redis.resume()
        await client.aclose(close_connection_pool=True)


async def test_confirmation_waits_at_most_the_hold_limit(own_redis: RedisServer, caplog: pytest.LogCaptureFixture):
    client = Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=0.3)
    monotonic = FakeClock(1000.0)
    node = build_node(SharedRedis(client, retry_interval=5.0, monotonic=monotonic), "a", monotonic=monotonic)
    try:
        own_redis.pause()
        update = message(1, "never answered")
        await node.receive(update)
        confirm = asyncio.create_task(node.inbox.ready_to_confirm(update.update_id + 1))
        await asyncio.sleep(0.05)
        assert not confirm.done()
        monotonic.advance(node.inbox.hold_limit)
        await asyncio.wait_for(confirm, 5)
        assert "confirming them to Telegram anyway" in caplog.text
    finally:
        own_redis.resume()
        node.gate("never answered").set()
        await client.aclose(close_connection_pool=True)


# --- memory mode, late answers -------------------------------------------------------------------------


async def test_memory_mode_drops_duplicates_and_keeps_the_order_but_confirms_at_once() -> None:
    node = build_node(None, "memory")
    first = message(1, "a")
    (entry,) = await node.receive(first)
    assert not entry.durable and not entry.holds_confirmation
    assert await node.receive(first) == [DUPLICATE]
    await node.receive(message(1, "b"))
    await asyncio.wait_for(node.inbox.ready_to_confirm(first.update_id + 10), 1)  # nothing held: not durable
    assert (await node.inbox.stats()).as_dict() | {"oldest_seconds": None} == {
        "pending": 2, "oldest_seconds": None, "kind": "memory", "durable": False, "claimed_total": 0}
    node.gate("b").set()
    node.gate("a").set()
    await wait_until(lambda: node.answered == ["a", "b"])


async def test_a_late_answer_quotes_its_question() -> None:
    """An answer `LATE_ANSWER_QUOTE_AFTER` s or more after the question replies to it; earlier ones do not."""
    clock = FakeClock(10_000.0)
    quote = QuoteLateAnswers(60, clock=clock)
    dp = Dispatcher()
    dp.update.outer_middleware(InboxMiddleware(Inbox()))
    bot = Bot("42:TEST")
    sent: list[SendMessage] = []

    async def make_request(bot: Bot, method: Any) -> Any:
        sent.append(method)

    @dp.message()
    async def reply(event: Message) -> None:
        await quote(make_request, bot, SendMessage(chat_id=event.chat.id, text="answer"))
        await quote(make_request, bot, SendMessage(chat_id=999, text="to another chat"))

    await dp.feed_update(bot, message(1, "quick", date=int(clock.now - 59)))
    late = message(1, "late", date=int(clock.now - 60))
    await dp.feed_update(bot, late)
    assert [m.reply_parameters for m in sent[:2]] == [None, None]
    assert late.message is not None and sent[2].reply_parameters is not None
    assert sent[2].reply_parameters.message_id == late.message.message_id
    assert sent[3].reply_parameters is None, "only in the question's chat"
    await bot.session.close()


async def test_the_shell_reads_what_waits_without_a_running_bot(cluster: Callable[[str], Node], redis_url: str) -> None:
    """What `luka-bot llm status` shows: the shared inbox, read from Redis (nothing without Redis)."""
    node = cluster("a")
    await node.receive(message(1, "waiting"), message(2, "waiting too"))
    stats = await read_inbox_stats(load_settings(_env_file=None, BOT_TOKEN="42:TEST", REDIS_URL=redis_url))
    assert stats is not None and (stats.pending, stats.kind) == (2, "redis")
    assert stats.oldest_seconds is not None and 0 <= stats.oldest_seconds < 60
    assert await read_inbox_stats(load_settings(_env_file=None, BOT_TOKEN="42:TEST")) is None


def test_the_status_line_says_what_waits_in_english_and_russian() -> None:
    """The line `/llm_status` and `luka-bot llm status` show (their renderers add `stats.summary()`)."""
    i18n = build_i18n()
    waiting = InboxStats(3, 75.0, "redis")
    with i18n.context(), i18n.use_locale("en"):
        assert waiting.summary() == "📥 Messages waiting for an answer: 3, the oldest for 1m 15s"
        assert InboxStats(0, None, "memory").summary() == (
            "📥 Messages waiting for an answer: none (this process only, not durable: set REDIS_URL)")
    with i18n.context(), i18n.use_locale("ru"):
        assert waiting.summary() == "📥 Сообщений ждут ответа: 3, самое давнее — 1 мин 15 с"
        assert "Redis не отвечает" in InboxStats(1, 2.0, "degraded").summary()

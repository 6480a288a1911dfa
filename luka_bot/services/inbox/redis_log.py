"""The inbox in Redis: one stream with one consumer group, a line per chat, a bitmap of update ids seen.

Keys under the bot's prefix (`luka:<bot id>:` by default):

- `inbox`: a stream; each entry is one update (`u` update id, `k` its line, `p` its JSON). An
  entry is in the pending list (PEL) of the consumer group `bots` from the moment it is written:
  the script that writes it also claims it for the writing process (`XCLAIM … FORCE`), in one
  step, so there is no moment when it belongs to nobody. Nobody ever reads `>`: entries move
  between processes only by `XAUTOCLAIM` (an entry idle longer than the orphan bound) and leave
  by `XACK` + `XDEL`, so `XLEN` is the number of messages waiting for an answer.
- `inbox:order:<line>`: the entry ids of one chat (line) in arrival order; an entry's turn comes
  when it is the first.
- `inbox:seen:<update_id // 65536>`: one bit per update id (Telegram numbers updates one by one),
  kept 25 hours (Telegram keeps an update 24 h), so an update delivered twice is handled once.

Every write is one script: it happens whole or not at all, and applying it again changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

GROUP = "bots"
SEEN_TTL = 25 * 3600
ORDER_TTL = 25 * 3600
SEEN_CHUNK = 65536

_GROUP_EXISTS = "redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')\n"

# KEYS: stream. ARGV: group, consumer, seen prefix, order prefix, seen ttl, order ttl, deadline (ms, Redis's
# clock), then (update id, line, payload) per update. Returns (entry id or "" for a duplicate, 1 when first in
# line) each, or {"late"} when Redis runs it after the deadline (its caller gave up waiting: nothing is written).
_RECORD = _GROUP_EXISTS + """
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[7]) then return {'late'} end
local out = {}
for i = 8, #ARGV, 3 do
  local uid = tonumber(ARGV[i])
  local seen = ARGV[3] .. math.floor(uid / 65536)
  local was = redis.call('SETBIT', seen, uid % 65536, 1)
  redis.call('EXPIRE', seen, ARGV[5])
  if was == 1 then
    out[#out + 1] = ''
    out[#out + 1] = 0
  else
    local id = redis.call('XADD', KEYS[1], '*', 'u', ARGV[i], 'k', ARGV[i + 1], 'p', ARGV[i + 2])
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'FORCE', 'JUSTID')
    local line = ARGV[4] .. ARGV[i + 1]
    redis.call('RPUSH', line, id)
    redis.call('EXPIRE', line, ARGV[6])
    out[#out + 1] = id
    out[#out + 1] = (redis.call('LINDEX', line, 0) == id) and 1 or 0
  end
end
return out
"""

# KEYS: stream. ARGV: group, order prefix, then (entry id, line) per entry.
_FINISH = """
for i = 3, #ARGV, 2 do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
  redis.call('LREM', ARGV[2] .. ARGV[i + 1], 1, ARGV[i])
end
return 1
"""

# KEYS: stream, line. ARGV: group, entry id. 1 when the entry is first in its line; a first entry that
# is no longer pending (finished without leaving the line, e.g. its keys were evicted) is skipped.
_IS_TURN = _GROUP_EXISTS + """
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if (not head) or head == ARGV[2] then return 1 end
  if #redis.call('XPENDING', KEYS[1], ARGV[1], head, head, 1) > 0 then return 0 end
  redis.call('LPOP', KEYS[2])
end
"""

# KEYS: stream. ARGV: group, consumer, idle ms, entry ids. Sets the idle time of those entries that
# are still this consumer's (0: "still working on it"); returns the ids another consumer took.
_REFRESH = _GROUP_EXISTS + """
local lost = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""

# KEYS: stream. ARGV: group, consumer, min idle ms, start, count. Returns (next start, entries as
# (id, fields, times delivered)); pending ids whose entry is gone are acknowledged.
_CLAIM = _GROUP_EXISTS + """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {}
for _, e in ipairs(r[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  out[#out + 1] = {e[1], e[2], p[1] and p[1][4] or 1}
end
for _, id in ipairs(r[3] or {}) do redis.call('XACK', KEYS[1], ARGV[1], id) end
return {r[1], out}
"""

# KEYS: stream. Returns (entries waiting, age of the oldest in ms or -1), on Redis's clock.
_STATS = """
local n = redis.call('XLEN', KEYS[1])
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if not first[1] then return {n, -1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {n, now - tonumber(string.match(first[1][1], '^(%d+)'))}
"""


@dataclass(frozen=True)
class Recorded:
    stream_id: str | None
    """None: the update was recorded before (a duplicate)."""
    first_in_line: bool


@dataclass(frozen=True)
class Claimed:
    stream_id: str
    update_id: int
    key: str
    payload: str
    attempts: int


class RecordedTooLate(RedisTimeoutError):
    """Redis ran the record after its caller had given up waiting, so it wrote nothing (see `record`)."""


class RedisInboxLog:
    """The Redis side of the inbox for one process (`consumer`); every method is one round trip."""

    def __init__(self, client: Redis, *, prefix: str, consumer: str, timeout: float = 0.5,
                 wall: Callable[[], float] = time.time):
        self.client = client
        self.consumer = consumer
        self.timeout = timeout
        self.wall = wall
        self._redis_minus_wall_ms: float | None = None
        self.stream = f"{prefix}inbox"
        self.order_prefix = f"{prefix}inbox:order:"
        self.seen_prefix = f"{prefix}inbox:seen:"
        self._record = client.register_script(_RECORD)
        self._finish = client.register_script(_FINISH)
        self._is_turn = client.register_script(_IS_TURN)
        self._refresh = client.register_script(_REFRESH)
        self._claim = client.register_script(_CLAIM)
        self._stats = client.register_script(_STATS)

    async def record(self, updates: Sequence[tuple[int, str, str]]) -> list[Recorded]:
        """Write (update id, line, JSON) each and claim it for this process; duplicates are skipped.

        A record whose reply does not come within the socket timeout is kept in memory instead;
        Redis (paused, overloaded) may still run it later, when the update has been answered from
        memory, or its process is dead: it would then be answered again. So the script carries a
        deadline on Redis's own clock (this process's estimate of it, `sync_clock`), 80 % of the
        timeout away, and writes nothing past it (`RecordedTooLate`).
        """
        if self._redis_minus_wall_ms is None:
            await self.sync_clock()
        assert self._redis_minus_wall_ms is not None
        deadline = int(self.wall() * 1000 + self._redis_minus_wall_ms + self.timeout * 800)
        args: list[str | int] = [GROUP, self.consumer, self.seen_prefix, self.order_prefix, SEEN_TTL, ORDER_TTL,
                                 deadline]
        for update_id, key, payload in updates:
            args += [update_id, key, payload]
        flat = await self._record(keys=[self.stream], args=args)
        if flat == ["late"]:
            self._redis_minus_wall_ms = None  # (a clock that jumped looks the same: measure again)
            raise RecordedTooLate("Redis ran the inbox record after its deadline")
        return [Recorded(flat[i] or None, bool(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def sync_clock(self) -> None:
        """Measure how far Redis's clock is from this process's (one `TIME`; the error is half a round trip)."""
        before = self.wall()
        seconds, micros = await self.client.time()
        after = self.wall()
        self._redis_minus_wall_ms = seconds * 1000 + micros / 1000 - (before + after) * 500

    async def finish(self, entries: Sequence[tuple[str, str]]) -> None:
        """(entry id, line) each: answered; it leaves the stream, the pending list and its line."""
        args: list[str] = [GROUP, self.order_prefix]
        for stream_id, key in entries:
            args += [stream_id, key]
        await self._finish(keys=[self.stream], args=args)

    async def is_turn(self, stream_id: str, key: str) -> bool:
        return bool(await self._is_turn(keys=[self.stream, self.order_prefix + key], args=[GROUP, stream_id]))

    async def refresh(self, stream_ids: Sequence[str], *, idle_ms: int = 0) -> list[str]:
        """Mark these entries idle for `idle_ms` (0: being worked on); the ids another process took meanwhile."""
        if not stream_ids:
            return []
        return list(await self._refresh(keys=[self.stream], args=[GROUP, self.consumer, idle_ms, *stream_ids]))

    async def claim(self, min_idle_ms: int, count: int, start: str = "0-0") -> tuple[str, list[Claimed]]:
        """Take up to `count` entries idle for `min_idle_ms` or more, scanning from `start`; (next start, them)."""
        next_start, raw = await self._claim(keys=[self.stream], args=[GROUP, self.consumer, min_idle_ms, start, count])
        claimed = []
        for stream_id, fields, delivered in raw:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            claimed.append(Claimed(stream_id, int(values["u"]), values["k"], values["p"], int(delivered)))
        return next_start, claimed

    async def stats(self) -> tuple[int, float | None]:
        """(entries waiting, age of the oldest in seconds or None)."""
        pending, oldest_ms = await self._stats(keys=[self.stream])
        return int(pending), (None if int(oldest_ms) < 0 else max(0, int(oldest_ms)) / 1000)

    async def forget_idle_consumers(self, idle_ms: int) -> int:
        """Drop consumers (stopped processes) with nothing pending, idle for `idle_ms`: the group stays small."""
        forgotten = 0
        for consumer in await self.client.xinfo_consumers(self.stream, GROUP):
            if consumer["name"] != self.consumer and not consumer["pending"] and consumer["idle"] >= idle_ms:
                forgotten += await self.client.xgroup_delconsumer(self.stream, GROUP, consumer["name"])
        return forgotten

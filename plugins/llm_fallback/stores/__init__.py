"""Where provider health lives: Redis (shared by every bot process) or process memory.

One small interface, `StateStore`, with three implementations:

- `MemoryStateStore`: the embedded default when no Redis is configured (one process);
- `RedisStateStore`: keys under a prefix (matched literally, also in SCAN), TTLs in ms, every
  write one atomic command or script, short socket timeouts so a hung Redis never stalls a chat;
- `RedisWithLocalFallback`: Redis first; while Redis does not answer it serves from process memory.

All stores of a process share one `SharedRedis` (`shared.py`): one bounded connection pool that
callers wait for (`RedisOptions.max_connections`; plain URL, `rediss://` or Sentinel), one
health state (Redis down: one ERROR line; back: one WARNING line, no traceback), and the writes
that wait for Redis to return.

What happens to writes made while Redis is away — exactly:

- the fallback engine's state learned meanwhile (cooldowns, probe leases, last errors, the
  preferred provider, a force) stays in process memory and is **forgotten** when Redis returns:
  Redis, shared with the other processes, is the truth again. Writing it back could overwrite
  fresher state another process recorded meanwhile; the cost of forgetting is at most one more
  request to a provider that is still down, which falls back as usual. A force set during an
  outage therefore ends when Redis returns (set it again);
- deletions meanwhile (`/llm_clear`, a cleared cooldown, a released probe) are written back as
  compare-and-delete of the value this process last saw in Redis: they remove what the admin
  saw, never what another process wrote in the meantime;
- counters (`add`: the tokens a paid provider's budget has spent) are added to Redis's total
  when it returns, in order; an add whose first try timed out may count twice (a budget errs on
  the side of spending, never of overspending);
- the bot's conversation data (`luka_bot.services.bot_store`) is written back in order, each
  write exactly once.

The store keeps strings; what they mean is the engine's business.
"""

from __future__ import annotations

from .base import STORE_ERRORS, Clock, StateStore
from .local_fallback import RedisWithLocalFallback
from .memory import MemoryStateStore
from .redis import RedisOptions, RedisStateStore, connect_redis, escape_glob
from .shared import PendingWrite, SharedRedis

__all__ = [
    "STORE_ERRORS",
    "Clock",
    "MemoryStateStore",
    "PendingWrite",
    "RedisOptions",
    "RedisStateStore",
    "RedisWithLocalFallback",
    "SharedRedis",
    "StateStore",
    "connect_redis",
    "escape_glob",
]


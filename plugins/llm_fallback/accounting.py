"""What providers answered that is no outage, counted: tokens against budgets, refusals of requests.

Neither changes a provider's health (`health.py` owns that): a spent budget makes routing skip
the provider until the period ends (`budget.py`), and a refusal repeated on every request is a
misconfiguration the admins hear of once. Both go out as `HealthEvent`s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .budget import KEEP_AFTER, Budgets, spent_key
from .events import EventBus, HealthEvent
from .stores import Clock, StateStore

logger = logging.getLogger("llm_fallback")

REJECTIONS_TO_TELL = 3
"""The same refusal of a request this many times in a row (no success between) is a misconfiguration."""


class Accounting:
    def __init__(self, store: StateStore, budgets: Budgets, events: EventBus, *, clock: Clock,
                 redact: Callable[[str], str]):
        self.store = store
        self.budgets = budgets
        self.events = events
        self.clock = clock
        self._redact = redact
        self._rejections: dict[str, tuple[str, int]] = {}

    async def answered(self, provider: str, tokens: int) -> None:
        """`provider` answered with `tokens` (input + output): its refusals start over; count its budget."""
        self._rejections.pop(provider, None)
        if provider not in self.budgets.limits or tokens <= 0:
            return
        now = self.clock()
        period = self.budgets.period_of(now)
        total = await self.store.add(spent_key(provider, period), tokens, self.budgets.ends_at(now) - now + KEEP_AFTER)
        limit = self.budgets.limits[provider]
        for share in self.budgets.crossed(provider, total - tokens, total):
            log = logger.error if share >= 1 else logger.warning
            log("💸 Provider %s has spent %d%% of its token budget for %s (%d of %d)%s", provider, round(share * 100),
                period, total, limit, ": skipped until the period ends (an admin's force still uses it)"
                if share >= 1 else "")
            await self.events.publish(HealthEvent("budget", provider, share=share, date=period, spent=total,
                                                  limit=limit))

    async def rejected(self, provider: str, kind: str, error: str) -> None:
        """`provider` refused a request as bad that another provider then answered (its refusal is on record:
        `ProviderHealth.refused`): the same refusal `REJECTIONS_TO_TELL` times in a row, no success between,
        is a misconfiguration admins hear of (once: the alert is deduplicated like the others)."""
        error = self._redact(error)
        same, count = self._rejections.get(provider, ("", 0))
        count = count + 1 if same == error else 1
        self._rejections[provider] = (error, count)
        if count == REJECTIONS_TO_TELL:
            logger.error("❌ Provider %s refuses every request: %s; they go to the next provider meanwhile "
                         "(its configuration? e.g. a model without tool support)", provider, error)
            await self.events.publish(HealthEvent("rejects_requests", provider, error=error))

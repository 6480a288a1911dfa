"""Token budgets of paid providers: how much each may spend per day (or month), and what "today" is.

A provider with a budget counts the tokens its answers report (`usage`), in the shared store
(`budget:<provider>:<period>`, one counter per period, every process adding to it). Once the
period's total reaches the budget, routing skips the provider until the period rolls over (at
midnight of `zone`, or the first of the month): unlike a cooling provider, not even as a last
resort. An admin's force still puts it first. Admins hear of 80 % and of 100 %, once each per
period. Pure: `health.py` writes the counters, `records.py` reads them with the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum

THRESHOLDS = (0.8, 1.0)
"""Shares of a budget that are announced (once each per period)."""
KEEP_AFTER = 2 * 24 * 3600.0
"""How long a period's counter is kept after the period ends (the status of yesterday, a late add)."""


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


def spent_key(provider: str, period: str) -> str:
    return f"budget:{provider}:{period}"


@dataclass(frozen=True)
class Budgets:
    limits: Mapping[str, int] = field(default_factory=dict)
    """Provider → tokens it may spend per period (providers not named: no budget)."""
    period: Period = Period.DAY
    zone: tzinfo = UTC

    def __post_init__(self) -> None:
        for provider, limit in self.limits.items():
            if limit <= 0:
                raise ValueError(f"the token budget of {provider!r} must be positive, not {limit}")

    def period_of(self, now: float) -> str:
        local = datetime.fromtimestamp(now, self.zone)
        return local.date().isoformat() if self.period is Period.DAY else f"{local.year}-{local.month:02d}"

    def ends_at(self, now: float) -> float:
        """When the period containing `now` rolls over (midnight of the zone, or the first of next month)."""
        local = datetime.fromtimestamp(now, self.zone)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period is Period.DAY:
            following = (start + timedelta(days=1, hours=3)).replace(hour=0)  # DST-proof: lands on the next day
        else:
            following = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
        return following.replace(tzinfo=self.zone).timestamp()

    def keys(self, now: float) -> dict[str, str]:
        """The counter of each provider with a budget, for the period containing `now`."""
        period = self.period_of(now)
        return {provider: spent_key(provider, period) for provider in self.limits}

    def crossed(self, provider: str, before: int, after: int) -> list[float]:
        """The thresholds a spend from `before` to `after` tokens went past."""
        limit = self.limits[provider]
        return [share for share in THRESHOLDS if before < share * limit <= after]

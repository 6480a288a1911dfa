"""When to hedge: start the next provider beside a slow one (`LLM_HEDGE_DELAY`).

If the provider being tried has produced no first event (the first streamed token, or the
whole response of a non-streamed call) within the delay, the next provider is started in
parallel; the first to produce a first event wins and the other is cancelled (a cancelled
loser is not a failure). Envoy's `hedge_on_per_try_timeout` and "The Tail at Scale" are the
references.

- a number: a fixed delay in seconds;
- `auto`: the delay follows the provider's recent time to first event — `AUTO_FACTOR` × its
  p95 over the last `WINDOW` successful attempts, bounded by `[min_delay, max_delay]`; until
  `MIN_SAMPLES` are seen, `max_delay` — so a hedge fires only for outliers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

AUTO_FACTOR = 3.0
WINDOW = 200
MIN_SAMPLES = 20


@dataclass
class HedgePolicy:
    fixed: float | None = None
    auto: bool = False
    min_delay: float = 0.25
    max_delay: float = 10.0
    _samples: dict[str, deque[float]] = field(default_factory=dict)

    @classmethod
    def from_setting(cls, value: float | str | None, *, min_delay: float = 0.25, max_delay: float = 10.0) -> HedgePolicy:
        """`None`/"" → off; a number → fixed; `auto` → adaptive. Raises ValueError otherwise."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return cls(min_delay=min_delay, max_delay=max_delay)
        if isinstance(value, str) and value.strip().lower() == "auto":
            return cls(auto=True, min_delay=min_delay, max_delay=max_delay)
        delay = float(value)
        if not math.isfinite(delay) or delay <= 0:
            raise ValueError("LLM_HEDGE_DELAY must be a positive number of seconds or 'auto'")
        return cls(fixed=delay, min_delay=min_delay, max_delay=max_delay)

    @property
    def enabled(self) -> bool:
        return self.auto or self.fixed is not None

    def delay_for(self, provider: str) -> float | None:
        """Seconds to wait for `provider`'s first event before hedging, or None (hedging off)."""
        if self.fixed is not None:
            return self.fixed
        if not self.auto:
            return None
        samples = self._samples.get(provider)
        if not samples or len(samples) < MIN_SAMPLES:
            return self.max_delay
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        return min(max(AUTO_FACTOR * p95, self.min_delay), self.max_delay)

    def observe(self, provider: str, first_event_seconds: float) -> None:
        """A successful attempt's time to first event (feeds `auto`)."""
        if self.auto:
            self._samples.setdefault(provider, deque(maxlen=WINDOW)).append(first_event_seconds)

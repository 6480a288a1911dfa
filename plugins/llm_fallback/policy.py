"""The numbers of the state machine: how long a cooldown lasts, when the next probe is due, what a strike is.

Pure (no I/O, no clock of its own): `health.py` applies them.

- cooldown: the n-th cooldown in a row lasts n × base, capped (Envoy's outlier detection
  multiplies its ejection time by the ejection count); a 429's `Retry-After` sets it directly,
  bounded;
- background recovery probes: every `interval` seconds while an outage is young; then the gap
  grows with the outage (a tenth of its length so far), capped at `interval × bound`. A primary
  back after an outage of length T is found within max(interval, T / 10): seconds after a
  short outage, about a minute after an hour, for ~90 probes in a 1-hour outage (720 at a fixed
  5 s);
- strikes: bad replies (empty, unusable) within one cooldown window; `STRIKES_TO_COOL` of them
  cool the provider.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_RETRY_AFTER = 3600.0
"""Upper bound for a provider's `Retry-After`."""
STRIKES_TO_COOL = 3
PROBE_GAP_FRACTION = 0.1
"""The gap between two recovery probes grows to this share of the outage so far."""
DEFAULT_PROBE_BOUND = 12
"""Recovery probes are at most `interval × bound` apart (5 s × 12 = 1 min by default)."""


def cooldown_seconds(base: float, ejections: int, cap: float, retry_after: float | None = None) -> float:
    if retry_after is not None:
        return min(max(retry_after, 1.0), MAX_RETRY_AFTER)
    return min(base * ejections, cap)


def next_probe_gap(interval: float, down_for: float, bound: int = DEFAULT_PROBE_BOUND) -> float:
    """Seconds until the next background recovery probe of a provider down for `down_for` seconds."""
    return min(max(interval, PROBE_GAP_FRACTION * down_for), interval * bound)


@dataclass(frozen=True)
class Timings:
    failure_cooldown: float
    max_cooldown: float
    preferred_ttl: float
    recovery_interval: float = 0.0
    """Seconds between background recovery probes of a cooling provider; 0: none (user requests probe)."""
    probe_bound: int = 12


@dataclass
class Strikes:
    """Bad replies per provider within a sliding window (one cooldown long)."""

    window: float
    _at: dict[str, deque[float]] = field(default_factory=dict)

    def add(self, provider: str, now: float) -> int:
        """Count one at `now`; returns the strikes in the window, starting over once `STRIKES_TO_COOL` is reached."""
        strikes = self._at.setdefault(provider, deque())
        strikes.append(now)
        while strikes and strikes[0] < now - self.window:
            strikes.popleft()
        count = len(strikes)
        if count >= STRIKES_TO_COOL:
            strikes.clear()
        return count

    def forget(self, provider: str | None = None) -> None:
        if provider is None:
            self._at.clear()
        else:
            self._at.pop(provider, None)

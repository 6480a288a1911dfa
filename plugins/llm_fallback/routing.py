"""Which provider next: the attempt order for one request, from the shared state. No I/O.

1. a forced provider (`/llm_force`) goes first, whatever its health; the others stay behind it;
   a pinned provider (the factory's `force_provider=`, for tests and debugging) is the only one;
2. then providers in priority order, skipping those in cooldown;
3. a half-open provider (its cooldown is over) keeps its place, and the request that reaches it
   takes the probe lease just before trying it (one request across all processes); without the
   lease it is skipped like a cooling one;
4. whatever was skipped is tried last, in priority order (last resort): never stop for want
   of trying;
5. except a provider whose token budget for the period is spent (`budget.py`): it is not tried
   at all, unless forced.

Within a provider its models go in order; a model in a "not found" cooldown is skipped (a
half-open model likewise needs its own probe lease), except as a last resort.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .records import Health, Snapshot


class Why(StrEnum):
    """Why a provider is in a request's attempt order."""

    FORCED = "forced"
    PINNED = "pinned"
    HEALTHY = "healthy"
    HALF_OPEN = "half_open"
    """Its cooldown is over: tried only with the probe lease."""
    LAST_RESORT = "last_resort"
    """Cooling (or probed by another request): tried only after every other."""

    @property
    def needs_probe_lease(self) -> bool:
        return self is Why.HALF_OPEN

    @property
    def probes_models(self) -> bool:
        """Whether a half-open model is tried only with its own probe lease (not when forced or a last resort)."""
        return self in (Why.HEALTHY, Why.HALF_OPEN)


@dataclass(frozen=True)
class Candidate:
    """One provider to try for this request: its models in order, and why it is in the order."""

    provider: str
    models: tuple[str, ...]
    why: Why
    half_open_models: frozenset[str] = field(default=frozenset())

    def as_last_resort(self, all_models: Sequence[str]) -> Candidate:
        return Candidate(self.provider, tuple(all_models), Why.LAST_RESORT)


def attempt_order(snapshot: Snapshot, providers: Mapping[str, Sequence[str]], *,
                  pinned: str | None = None) -> list[Candidate]:
    """The candidates for one request, in the order they are tried (see the module docstring)."""
    if pinned is not None:
        return [Candidate(pinned, tuple(providers[pinned]), Why.PINNED)]
    forced = snapshot.forced.provider if snapshot.forced and snapshot.forced.provider in providers else None
    head: list[Candidate] = []
    tail: list[Candidate] = []
    if forced:
        head.append(Candidate(forced, tuple(providers[forced]), Why.FORCED))
    for provider, models in providers.items():
        if provider == forced or provider in snapshot.over_budget:
            continue
        states = {m: snapshot.health(provider, m) for m in models}
        usable = tuple(m for m in models if states[m] is not Health.COOLING)
        health = snapshot.health(provider)
        if usable and health is not Health.COOLING:
            why = Why.HALF_OPEN if health is Health.HALF_OPEN else Why.HEALTHY
            half_open = frozenset(m for m in usable if states[m] is Health.HALF_OPEN)
            head.append(Candidate(provider, usable, why, half_open))
        else:
            tail.append(Candidate(provider, tuple(models), Why.LAST_RESORT))
    return head + tail

"""Which provider next: the attempt order for one request, from the shared state. No I/O.

1. a forced provider (`/llm_force`) goes first, whatever its health; the others stay behind it;
   a pinned provider (the factory's `force_provider=`, for tests and debugging) is the only one;
2. then providers in priority order, skipping those in cooldown;
3. a provider whose cooldown is over is half-open: it keeps its place, and the request that
   reaches it takes the probe lease just before trying it (one request across all processes);
   without the lease it is skipped like a cooling one;
4. whatever was skipped is tried last, in priority order (last resort): never stop for want
   of trying.

Within a provider its models go in order; a model in a "not found" cooldown is skipped
(half-open models likewise need their own probe lease), except as a last resort.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .state import Snapshot

Reason = Literal["forced", "pinned", "healthy", "half_open", "last_resort"]


@dataclass(frozen=True)
class ModelStep:
    """One model of a candidate provider; `probe`: its own 404 cooldown is over, it needs the lease."""

    name: str
    probe: bool = False


@dataclass(frozen=True)
class Candidate:
    """One provider to try for this request, with its models in order."""

    provider: str
    models: tuple[ModelStep, ...]
    reason: Reason

    @property
    def probe(self) -> bool:
        """The provider's cooldown is over: try it only with the probe lease."""
        return self.reason == "half_open"


def attempt_order(snapshot: Snapshot, providers: Mapping[str, Sequence[str]], *,
                  pinned: str | None = None) -> list[Candidate]:
    """The candidates for one request, in the order they are tried (see the module docstring)."""
    if pinned is not None:
        return [Candidate(pinned, _all_models(providers[pinned]), "pinned")]
    forced = snapshot.forced.provider if snapshot.forced and snapshot.forced.provider in providers else None
    head: list[Candidate] = []
    tail: list[Candidate] = []
    if forced:
        head.append(Candidate(forced, _all_models(providers[forced]), "forced"))
    for provider, models in providers.items():
        if provider == forced:
            continue
        usable = tuple(
            ModelStep(m, probe=snapshot.half_open(provider, m))
            for m in models if not snapshot.cooling(provider, m)
        )
        if usable and not snapshot.cooling(provider):
            head.append(Candidate(provider, usable, "half_open" if snapshot.half_open(provider) else "healthy"))
        else:
            tail.append(last_resort(provider, models))
    return head + tail


def last_resort(provider: str, models: Sequence[str]) -> Candidate:
    return Candidate(provider, _all_models(models), "last_resort")


def _all_models(models: Sequence[str]) -> tuple[ModelStep, ...]:
    return tuple(ModelStep(m) for m in models)

"""The typed transitions of the provider-health state machine (`health.py` returns them).

Each is also published to the engine's listeners as a `HealthEvent` (alerts, metrics).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CooledDown:
    """`provider` (or only its `model`) starts a cooldown of `cooldown` seconds."""

    provider: str
    model: str | None
    kind: str
    error: str
    cooldown: float
    ejections: int
    has_working_fallback: bool


@dataclass(frozen=True)
class Recovered:
    """`provider` served again after a failure episode (`kind`, `error`), or was marked healthy by hand."""

    provider: str
    kind: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Cleared:
    """What `clear()` forgot."""

    preferred: str | None
    forced: str | None
    cooldowns: list[str]


Transition = CooledDown | Recovered

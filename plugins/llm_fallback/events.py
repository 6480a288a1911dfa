"""What the fallback engine tells its listeners (admin alerts, metrics).

`LLMProviderFallback.add_listener(fn)`: `fn(event)` (sync or async) is called for every event
below. Listeners must be cheap and must never raise into an LLM call (the engine logs and
ignores a listener's error). Match on the class you care about; ignore the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A change an operator cares about (alerts are sent for these).

    - `down`: `provider` starts a cooldown of `cooldown` seconds (`error` says why);
    - `recovered`: `provider` served again after a cooldown (or "check now" proved it works);
    - `all_failed`: one request found no provider that could answer (`attempts` lists them).
    """

    kind: Literal["down", "recovered", "all_failed"]
    provider: str | None = None
    error: str | None = None
    cooldown: float | None = None
    attempts: tuple[object, ...] = ()
    has_working_fallback: bool = True
    """For `down`: whether another provider is configured and not cooling down."""


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """One provider/model tried for one request, from its start to its real end.

    `outcome`: `ok`, a `FailureKind` value (`connection`, `timeout`, `server_error`, …),
    `cancelled` (the caller went away: nobody's fault) or `hedge_lost` (a hedged twin won).
    `first_event_seconds`: time to the response (non-streamed) or to the first streamed event,
    None when there was none. `seconds`: start to end.
    """

    provider: str
    model: str
    outcome: str
    seconds: float
    first_event_seconds: float | None = None
    streamed: bool = False
    blamed: bool = False
    """Whether this outcome counted against the provider (a cooldown or a strike)."""


@dataclass(frozen=True, slots=True)
class FallbackEvent:
    """A request that `from_provider` could not serve was served by `to_provider`."""

    from_provider: str
    to_provider: str


@dataclass(frozen=True, slots=True)
class HedgeEvent:
    """`provider` had no first event within the hedge delay: `to_provider` was started beside it."""

    provider: str
    to_provider: str
    delay: float


Event = HealthEvent | AttemptEvent | FallbackEvent | HedgeEvent
Listener = Callable[[Event], Awaitable[None] | None]

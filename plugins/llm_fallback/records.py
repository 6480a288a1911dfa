"""What is stored, under which key, and what it means now: the shared fallback state as records.

Keys (all under the store's namespace, e.g. `llm:<bot_id>:`):

| key                              | value                      | written by (health.py only)      |
|----------------------------------|----------------------------|----------------------------------|
| `preferred`                      | `Choice` (last that served) | a success, refreshed lazily      |
| `forced`                         | `Choice` (admin's force)    | `/llm_force`, `force_provider`   |
| `cooldown:<provider>`            | `FailureRecord`             | a failure that blames it         |
| `cooldown:<provider>/<model>`    | `FailureRecord` (404 model) | a "model not found"              |
| `probe:<provider>[/<model>]`     | a random token              | the one request probing it       |
| `last_error:<provider>`          | `FailureRecord`             | every recorded failure (status)  |

A `FailureRecord` outlives its cooldown (`FAILURE_MEMORY`): once `until` has passed the provider
is half-open (one request probes it) until a real success deletes the record. Times in values
come from the engine's injected clock; store TTLs only collect garbage.

`Snapshot.health()` is the one place where a record becomes a state (healthy, cooling,
half-open): routing and status read it from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from .stores import StateStore

FAILURE_MEMORY = 24 * 3600.0
"""How long a failure is remembered after its cooldown (half-open until a success)."""

PREFERRED = "preferred"
FORCED = "forced"


def cooldown_key(provider: str, model: str | None = None) -> str:
    return f"cooldown:{provider}" if model is None else f"cooldown:{provider}/{model}"


def probe_key(provider: str, model: str | None = None) -> str:
    return f"probe:{provider}" if model is None else f"probe:{provider}/{model}"


def last_error_key(provider: str) -> str:
    return f"last_error:{provider}"


class Health(StrEnum):
    """What a provider (or one of its models) is now, as routing and status see it."""

    HEALTHY = "healthy"
    COOLING = "cooling"
    """Failed recently: skipped (tried only as a last resort) until its cooldown ends."""
    HALF_OPEN = "half_open"
    """Its cooldown is over: exactly one request (the probe lease holder) tries it."""


@dataclass(frozen=True)
class FailureRecord:
    """A provider's (or one model's) failure episode; its current cooldown ends at `until`.

    `count`: failures recorded in this episode; `ejections`: cooldowns started in a row (the
    first failure, then each failed probe): the next cooldown is `ejections × base`, capped.
    """

    until: float
    at: float
    kind: str
    error: str
    count: int
    ejections: int = 1
    raw: str = field(default="", compare=False, repr=False)

    @classmethod
    def parse(cls, raw: str | None) -> FailureRecord | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(float(data["until"]), float(data["at"]), str(data["kind"]), str(data["error"]),
                       int(data["count"]), int(data.get("ejections", 1)), raw)
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps({"until": self.until, "at": self.at, "kind": self.kind, "error": self.error,
                           "count": self.count, "ejections": self.ejections})


@dataclass(frozen=True)
class Choice:
    """A provider chosen until `until`: the preferred one (last that served) or the forced one."""

    provider: str
    until: float

    @classmethod
    def parse(cls, raw: str | None, now: float) -> Choice | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            choice = cls(str(data["provider"]), float(data["until"]))
        except (ValueError, KeyError, TypeError):
            return None
        return choice if choice.until > now else None

    def dump(self) -> str:
        return json.dumps({"provider": self.provider, "until": self.until})


@dataclass
class Snapshot:
    """The shared state as read (one `MGET`) at the start of a request."""

    now: float
    forced: Choice | None
    preferred: Choice | None
    failures: dict[str, FailureRecord | None]
    model_failures: dict[tuple[str, str], FailureRecord | None]

    def failure(self, provider: str, model: str | None = None) -> FailureRecord | None:
        return self.failures.get(provider) if model is None else self.model_failures.get((provider, model))

    def health(self, provider: str, model: str | None = None) -> Health:
        record = self.failure(provider, model)
        if record is None:
            return Health.HEALTHY
        return Health.COOLING if record.until > self.now else Health.HALF_OPEN

    def cooling(self, provider: str, model: str | None = None) -> bool:
        return self.health(provider, model) is Health.COOLING

    def with_failures(self) -> list[str]:
        """Providers with a failure on record (theirs or one of their models'), sorted."""
        return sorted({p for p, r in self.failures.items() if r} | {p for (p, _), r in self.model_failures.items() if r})


class StateKeys:
    """The keys one request reads, for a fixed set of providers and models."""

    def __init__(self, models: dict[str, tuple[str, ...]]):
        self.models = models
        self.keys = [FORCED, PREFERRED] + [
            key for provider, names in models.items()
            for key in [cooldown_key(provider)] + [cooldown_key(provider, m) for m in names]
        ]

    async def read(self, store: StateStore, now: float) -> Snapshot:
        values = dict(zip(self.keys, await store.get_many(self.keys), strict=True))
        return Snapshot(
            now=now,
            forced=Choice.parse(values[FORCED], now),
            preferred=Choice.parse(values[PREFERRED], now),
            failures={p: FailureRecord.parse(values[cooldown_key(p)]) for p in self.models},
            model_failures={(p, m): FailureRecord.parse(values[cooldown_key(p, m)])
                            for p, names in self.models.items() for m in names},
        )

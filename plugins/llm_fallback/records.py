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
| `last_ok:<provider>`             | a time                      | any answer of it (lazily, ≤ 1/min) |
| `recovery:<provider>`            | `ProbeSchedule`             | a cooldown start, each probe     |
| `ready:<provider>`               | `Readiness`                 | each readiness check of a standby |
| `checker:<provider>`             | a random token              | the one process checking it now  |
| `budget:<provider>:<period>`     | tokens spent (a counter)    | every answer of a budgeted one   |

A `FailureRecord` outlives its cooldown (`FAILURE_MEMORY`): once `until` has passed the provider
is half-open (one request probes it) until a real success deletes the record. While background
recovery probes cover a provider (a live `ProbeSchedule`), it stays cooling past `until` until a
probe succeeds: user requests never probe it. Times in values come from the engine's injected
clock; store TTLs only collect garbage.

`Snapshot.health()` is the one place where the records become a state (healthy, cooling,
half-open): routing and status read it from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from .budget import Budgets
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


def last_ok_key(provider: str) -> str:
    return f"last_ok:{provider}"


def recovery_key(provider: str) -> str:
    return f"recovery:{provider}"


def ready_key(provider: str) -> str:
    return f"ready:{provider}"


def checker_key(provider: str) -> str:
    return f"checker:{provider}"


def _load(raw: str | None) -> dict[str, object] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class Lease:
    """A lease held by one request or process: the key and this holder's random token."""

    key: str
    token: str


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
    `streamed`: a failure of the episode was a stream's (cut, or failed before its first chunk):
    only a stream that goes through proves the provider back, a short call proves nothing about those.
    `output`: the provider answered, but with replies nobody could use (strikes): a probe's one token
    proves nothing about those either; no background probe, the first request after the cooldown does.
    """

    until: float
    at: float
    kind: str
    error: str
    count: int
    ejections: int = 1
    streamed: bool = False
    output: bool = False
    raw: str = field(default="", compare=False, repr=False)

    @classmethod
    def parse(cls, raw: str | None) -> FailureRecord | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(float(data["until"]), float(data["at"]), str(data["kind"]), str(data["error"]),
                       int(data["count"]), int(data.get("ejections", 1)),
                       bool(data.get("streamed", data["kind"] == "stream_cut")), bool(data.get("output")), raw)
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps({"until": self.until, "at": self.at, "kind": self.kind, "error": self.error,
                           "count": self.count, "ejections": self.ejections, "streamed": self.streamed,
                           "output": self.output})


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


@dataclass(frozen=True)
class ProbeSchedule:
    """Background recovery probes of a cooling provider: the next is due at `next_at`.

    `failures`: probes failed in a row; `since`: when the provider went down (the back-off grows
    with the length of the outage). A schedule whose `next_at` lies more than a grace period in
    the past has lost its prober (a killed process): user requests probe the provider again.
    """

    next_at: float
    failures: int
    since: float

    @classmethod
    def parse(cls, raw: str | None) -> ProbeSchedule | None:
        data = _load(raw)
        try:
            return cls(float(data["next_at"]), int(data["failures"]), float(data["since"])) if data else None
        except (KeyError, TypeError, ValueError):
            return None

    def dump(self) -> str:
        return json.dumps({"next_at": self.next_at, "failures": self.failures, "since": self.since})


@dataclass(frozen=True)
class Readiness:
    """The last readiness check of a standby provider (`ok`, or the failure's `kind` and `error`), due again at `next_at`."""

    ok: bool
    at: float
    next_at: float
    kind: str | None = None
    error: str | None = None

    @classmethod
    def parse(cls, raw: str | None) -> Readiness | None:
        data = _load(raw)
        try:
            return cls(bool(data["ok"]), float(data["at"]), float(data["next_at"]),  # type: ignore[arg-type]
                       data.get("kind"), data.get("error")) if data else None  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return None

    def dump(self) -> str:
        return json.dumps({"ok": self.ok, "at": self.at, "next_at": self.next_at, "kind": self.kind,
                           "error": self.error})


@dataclass
class Snapshot:
    """The shared state as read (one `MGET`) at the start of a request."""

    now: float
    forced: Choice | None
    preferred: Choice | None
    failures: dict[str, FailureRecord | None]
    model_failures: dict[tuple[str, str], FailureRecord | None]
    recoveries: dict[str, ProbeSchedule | None] = field(default_factory=dict)
    last_ok: dict[str, float | None] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    """Tokens each provider with a budget has spent this period."""
    over_budget: frozenset[str] = frozenset()
    """Providers whose budget for this period is spent: not tried (unless forced)."""
    probe_grace: float = 0.0
    """Seconds past its `next_at` a recovery schedule still counts as covered by a live prober."""

    def failure(self, provider: str, model: str | None = None) -> FailureRecord | None:
        return self.failures.get(provider) if model is None else self.model_failures.get((provider, model))

    def health(self, provider: str, model: str | None = None) -> Health:
        record = self.failure(provider, model)
        if record is None:
            return Health.HEALTHY
        if record.until > self.now or (model is None and self.probed_in_background(provider)):
            return Health.COOLING
        return Health.HALF_OPEN

    def probed_in_background(self, provider: str) -> bool:
        """A live background prober covers `provider`: it stays cooling until a probe succeeds."""
        schedule = self.recoveries.get(provider)
        return schedule is not None and self.now <= schedule.next_at + self.probe_grace

    def cooling(self, provider: str, model: str | None = None) -> bool:
        return self.health(provider, model) is Health.COOLING

    def no_model_left(self, provider: str, *, on_record: bool = False) -> bool:
        """Every model of `provider` is cooling (`on_record`: has a failure on record, half-open too)."""
        models = [m for p, m in self.model_failures if p == provider]
        return bool(models) and all(self.failure(provider, m) is not None if on_record else
                                    self.cooling(provider, m) for m in models)

    def with_failures(self) -> list[str]:
        """Providers with a failure on record (theirs or one of their models'), sorted."""
        return sorted({p for p, r in self.failures.items() if r} | {p for (p, _), r in self.model_failures.items() if r})


class StateKeys:
    """The keys one request reads (one `MGET`), for a fixed set of providers and models."""

    def __init__(self, models: dict[str, tuple[str, ...]], *, probe_grace: float = 0.0,
                 budgets: Budgets | None = None):
        self.models = models
        self.probe_grace = probe_grace
        self.budgets = budgets or Budgets()
        self.keys = [FORCED, PREFERRED] + [
            key for provider, names in models.items()
            for key in [cooldown_key(provider), recovery_key(provider), last_ok_key(provider)]
            + [cooldown_key(provider, m) for m in names]
        ]

    async def read(self, store: StateStore, now: float) -> Snapshot:
        budget_keys = self.budgets.keys(now)
        keys = self.keys + list(budget_keys.values())
        values = dict(zip(keys, await store.get_many(keys), strict=True))
        spent = {p: int(_time(values[key]) or 0) for p, key in budget_keys.items()}
        return Snapshot(
            now=now,
            forced=Choice.parse(values[FORCED], now),
            preferred=Choice.parse(values[PREFERRED], now),
            failures={p: FailureRecord.parse(values[cooldown_key(p)]) for p in self.models},
            model_failures={(p, m): FailureRecord.parse(values[cooldown_key(p, m)])
                            for p, names in self.models.items() for m in names},
            recoveries={p: ProbeSchedule.parse(values[recovery_key(p)]) for p in self.models},
            last_ok={p: _time(values[last_ok_key(p)]) for p in self.models},
            probe_grace=self.probe_grace,
            spent=spent,
            over_budget=frozenset(p for p, tokens in spent.items() if tokens >= self.budgets.limits[p]),
        )


def _time(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None

"""The status an operator reads: typed here, rendered by the Telegram admin (`admin.py`) and the CLI.

`FallbackStatus.as_dict()` is the seed's status dict (`get_provider_stats()`, `get_provider_status()`,
`luka-bot llm status --json`): its keys are a public contract and only ever grow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .budget import Budgets
from .deprecations import Lifecycle, outdated_models
from .providers import ProviderRegistry
from .records import FailureRecord, Health, Readiness, Snapshot


class ProviderState(StrEnum):
    """`records.Health`, plus "not configured" (a provider without its required settings) and
    "unknown" (nothing failed, but nothing has shown it works either: never served, never checked)."""

    NOT_CONFIGURED = "not_configured"
    BUDGET = "budget"
    """Its token budget for the period is spent: skipped until the period ends (unless forced)."""
    UNKNOWN = "unknown"
    HEALTHY = Health.HEALTHY.value
    COOLING = Health.COOLING.value
    HALF_OPEN = Health.HALF_OPEN.value


@dataclass(frozen=True)
class OutdatedModel:
    model: str
    retired: bool
    """True: past its retirement date (its requests fail, or go to `rerouted_to`); False: deprecated."""
    retirement_date: str | None
    """ISO date, when announced."""
    replacement: str | None


@dataclass(frozen=True)
class ProviderStatus:
    name: str
    state: ProviderState
    configured: bool
    models: list[str]
    cooldown_seconds_left: int = 0
    cooldown_multiplier: int = 0
    failures: int = 0
    last_error: str | None = None
    last_error_kind: str | None = None
    last_error_seconds_ago: int | None = None
    unavailable_models: list[str] | None = None
    hedges_last_hour: int = 0
    setting_hint: str | None = None
    """The setting to fix when it is not configured or refuses our credentials."""
    next_probe_seconds: int | None = None
    """Seconds until the next background recovery probe (cooling, probes on)."""
    ready: bool | None = None
    """The last readiness check of this provider as an idle standby: passed, failed, or none yet."""
    ready_checked_seconds_ago: int | None = None
    ready_error: str | None = None
    outdated_models: list[OutdatedModel] | None = None
    """Its models its vendor retired or deprecated (pydantic-ai's notices)."""
    budget: int | None = None
    """Tokens it may spend per period (None: no budget)."""
    spent: int | None = None
    """Tokens spent in the current period (`budget_period`)."""
    budget_period: str | None = None
    budget_resets_seconds: int | None = None

    @property
    def available(self) -> bool:
        """Configured, not cooling, budget left: a request would try it in its turn."""
        return self.configured and self.state not in (ProviderState.COOLING, ProviderState.BUDGET)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("name")
        data["state"] = self.state.value
        data["unavailable_models"] = list(self.unavailable_models or [])
        data["outdated_models"] = [asdict(m) for m in self.outdated_models or []]
        # The seed's "healthy": not marked failed (an untried provider is healthy there; `state` says "unknown").
        data["healthy"] = self.state in (ProviderState.HEALTHY, ProviderState.UNKNOWN)
        data["available"] = self.available
        return data


@dataclass(frozen=True)
class FallbackStatus:
    providers: list[ProviderStatus]
    preferred_provider: str | None
    forced_provider: str | None
    forced_seconds_left: int | None
    store: str
    """`redis`, `memory` or `degraded` (Redis configured but not answering)."""
    hedging: bool

    @property
    def order(self) -> list[str]:
        return [p.name for p in self.providers]

    def provider(self, name: str) -> ProviderStatus:
        return next(p for p in self.providers if p.name == name)

    def as_dict(self) -> dict[str, Any]:
        """The seed's status dict, plus cooldowns, last errors, force, hedges and store."""
        return {
            "primary_provider": self.order[0],
            "fallback_provider": self.order[1] if len(self.order) > 1 else None,
            "provider_order": self.order,
            "preferred_provider": self.preferred_provider,
            "forced_provider": self.forced_provider,
            "forced_seconds_left": self.forced_seconds_left,
            "store": self.store,
            "hedging": self.hedging,
            "provider_health": {p.name: p.as_dict() for p in self.providers},
        }


def _cooldown_left(snapshot: Snapshot, provider: str, models: Sequence[str]) -> int:
    """Until the provider (or, when all its models are missing, the first of them) is tried again."""
    record = snapshot.failure(provider)
    if record is not None and record.until > snapshot.now:
        return round(record.until - snapshot.now)
    ends = [r.until for m in models if (r := snapshot.failure(provider, m)) is not None and r.until > snapshot.now]
    return round(min(ends) - snapshot.now) if ends else 0


def _state(configured: bool, health: Health, evidence: bool) -> ProviderState:
    if not configured:
        return ProviderState.NOT_CONFIGURED
    if health is Health.HEALTHY and not evidence:
        return ProviderState.UNKNOWN
    return ProviderState(health.value)


def build_status(registry: ProviderRegistry, snapshot: Snapshot, last_errors: Mapping[str, FailureRecord | None],
                 readiness: Mapping[str, Readiness | None], *, budgets: Budgets, hedges_last_hour: Mapping[str, int],
                 store: str, hedging: bool) -> FallbackStatus:
    now = snapshot.now
    hints = registry.setting_hints
    today = datetime.fromtimestamp(now, UTC).date()
    outdated: dict[str, list[OutdatedModel]] = {}
    for notice in outdated_models(registry.specs.values(), today=today):
        outdated.setdefault(notice.provider, []).append(OutdatedModel(
            notice.model, notice.lifecycle is Lifecycle.RETIRED,
            notice.retirement_date.isoformat() if notice.retirement_date else None, notice.replacement))
    providers = []
    for name in registry.order:
        spec = registry.specs[name]
        record = snapshot.failure(name)
        last = last_errors.get(name)
        ready = readiness.get(name)
        health = snapshot.health(name)
        if snapshot.no_model_left(name):
            health = Health.COOLING  # none of its models exists there: it cannot answer
        cooling = health is Health.COOLING
        schedule = snapshot.recoveries.get(name) if record else None
        state = _state(spec.configured, health, snapshot.last_ok.get(name) is not None or last is not None)
        if spec.configured and name in snapshot.over_budget:
            state = ProviderState.BUDGET
        limit = budgets.limits.get(name)
        providers.append(ProviderStatus(
            name=name,
            state=state,
            configured=spec.configured,
            models=list(spec.models),
            cooldown_seconds_left=_cooldown_left(snapshot, name, spec.models) if cooling else 0,
            cooldown_multiplier=record.ejections if record else 0,
            failures=record.count if record else 0,
            last_error=last.error if last else None,
            last_error_kind=last.kind if last else None,
            last_error_seconds_ago=round(now - last.at) if last else None,
            unavailable_models=[m for m in spec.models if snapshot.cooling(name, m)],
            hedges_last_hour=hedges_last_hour.get(name, 0),
            setting_hint=hints.get(name),
            next_probe_seconds=max(0, round(schedule.next_at - now)) if schedule else None,
            ready=ready.ok if ready else None,
            ready_checked_seconds_ago=round(now - ready.at) if ready else None,
            ready_error=ready.error if ready else None,
            outdated_models=outdated.get(name, []),
            budget=limit,
            spent=snapshot.spent.get(name) if limit else None,
            budget_period=budgets.period_of(now) if limit else None,
            budget_resets_seconds=round(budgets.ends_at(now) - now) if limit else None,
        ))
    forced = snapshot.forced
    return FallbackStatus(
        providers=providers,
        preferred_provider=snapshot.preferred.provider if snapshot.preferred else None,
        forced_provider=forced.provider if forced else None,
        forced_seconds_left=round(forced.until - now) if forced else None,
        store=store,
        hedging=hedging,
    )

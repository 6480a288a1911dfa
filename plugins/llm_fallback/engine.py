"""`LLMProviderFallback`: builds the pieces, bounds the requests in flight, keeps the seed's API.

What each piece decides, and where:

- which providers exist, their models and clients: `providers.ProviderRegistry`;
- what a failure means (fall back? whose fault?): `errors.classify`, the only place;
- what is stored and what state it means: `records.py`; the only writer: `health.ProviderHealth`;
- who is tried next for one request: `routing.attempt_order` (pure), handed out by `plan.Plan`;
- one try from start to real end: `attempt.ProviderAttempt`; hedged tries: `hedging.Hedging`;
- what an operator reads: `status.FallbackStatus`; forcing limits: `force.py`.

Per LLM request the model asks for a plan (one read of the shared state, one Redis `MGET`);
waiting for a slot of `max_concurrent_requests` happens before that and costs no provider time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings

from .accounting import Accounting
from .attempt import ProviderAttempt
from .background import BackgroundChecks
from .budget import Budgets
from .checks import check_provider
from .deprecations import Lifecycle, model_status, outdated_models
from .errors import AllProvidersFailedError, Blame, FailedAttempt, FailureKind, classify
from .events import EventBus, HealthEvent, Listener
from .force import check_force
from .health import ProviderHealth
from .hedging import HedgePolicy, Hedging
from .loop_lag import LoopLagMonitor
from .plan import Plan, Target, log_choice
from .policy import Timings
from .providers import ProviderClient, ProviderRegistry, ProviderSpec
from .redaction import describe, redact
from .routing import attempt_order
from .status import FallbackStatus, build_status
from .stores import Clock, StateStore
from .transitions import Cleared

logger = logging.getLogger("llm_fallback")

PROBE_LEASE_MARGIN = 5.0
"""Seconds a probe lease outlives its provider's timeout (a killed prober's lease then expires)."""


class LLMProviderFallback:
    """Provider order, shared health and the seed's management API, over a shared `StateStore`."""

    def __init__(
        self,
        providers: Sequence[ProviderSpec],
        store: StateStore,
        *,
        failure_cooldown: float = 300.0,
        preferred_ttl: float = 1800.0,
        max_cooldown: float | None = None,
        clock: Clock = time.time,
        models: Mapping[str, Mapping[str, Model]] | None = None,
        max_concurrent_requests: int | None = None,
        hedge_delay: float | str | None = None,
        loop_lag: LoopLagMonitor | None = None,
        recovery_probe_interval: float = 0.0,
        standby_check_interval: float = 0.0,
        budgets: Budgets | None = None,
    ):
        if failure_cooldown <= 0 or preferred_ttl <= 0:
            raise ValueError("failure_cooldown and preferred_ttl must be positive")
        if max_concurrent_requests is not None and max_concurrent_requests < 1:
            raise ValueError("max_concurrent_requests must be at least 1")
        self.providers = ProviderRegistry(providers, models)
        self.store = store
        self.clock = clock
        self.events = EventBus()
        self.loop_lag = loop_lag or LoopLagMonitor()
        if recovery_probe_interval < 0 or standby_check_interval < 0:
            raise ValueError("probe and check intervals must be positive, or 0 (off)")
        timings = Timings(float(failure_cooldown),
                          float(max_cooldown if max_cooldown is not None else max(failure_cooldown, 3600.0)),
                          float(preferred_ttl), float(recovery_probe_interval))
        self.budgets = budgets or Budgets()
        unknown = set(self.budgets.limits) - set(self.providers.specs)
        if unknown:
            raise ValueError(f"token budgets for unknown providers: {', '.join(sorted(unknown))}")
        self.accounting = Accounting(store, self.budgets, self.events, clock=clock, redact=self.redact)
        self.health = ProviderHealth(
            store, {name: spec.models for name, spec in self.providers.specs.items()}, self.providers.configured,
            events=self.events, clock=clock, timings=timings, redact=self.redact, budgets=self.budgets,
            setting_hints=self.providers.setting_hints,
            lease_seconds={name: spec.timeout + PROBE_LEASE_MARGIN for name, spec in self.providers.specs.items()})
        self.background = BackgroundChecks(self.providers, self.health, self.events, clock=clock,
                                           recovery_interval=float(recovery_probe_interval),
                                           standby_interval=float(standby_check_interval), describe=self.describe)
        self.hedging = Hedging(HedgePolicy.from_setting(hedge_delay), self.events, clock)
        self._admission = asyncio.Semaphore(max_concurrent_requests) if max_concurrent_requests else None
        self.max_concurrent_requests = max_concurrent_requests
        logger.info("✅ LLMProviderFallback initialized")
        logger.info("🔧 Provider order: %s", " → ".join(self.order))
        logger.info("🔧 Primary: %s, Fallback: %s", self.primary, self._fallbacks_text())

    # -- the registry

    @property
    def order(self) -> list[str]:
        """Every provider, in priority order (configured or not)."""
        return self.providers.order

    @property
    def configured(self) -> list[str]:
        return self.providers.configured

    @property
    def primary(self) -> str:
        return self.providers.primary

    @property
    def specs(self) -> dict[str, ProviderSpec]:
        return self.providers.specs

    @property
    def models(self) -> dict[str, Mapping[str, Model]]:
        return self.providers.models

    @property
    def clients(self) -> dict[str, ProviderClient]:
        return self.providers.clients

    def _fallbacks_text(self) -> str:
        """The fallbacks that can answer, and those that can't: for want of a setting, or because every
        model of theirs is retired (never "healthy" by name alone)."""
        hints = self.providers.setting_hints
        cannot: dict[str, str] = {}
        for provider in self.order[1:]:
            spec = self.specs[provider]
            if not spec.configured:
                cannot[provider] = f"{provider} is not configured: set {hints.get(provider, 'its settings')}"
            elif all(_retired(spec.kind, model) for model in spec.models):
                cannot[provider] = f"every model of {provider} is retired"
        ready = [p for p in self.order[1:] if p not in cannot]
        text = ", ".join(ready) or "none"
        return f"{text} ({'; '.join(cannot.values())})" if cannot else text

    def redact(self, text: str) -> str:
        return redact(text, self.providers.secrets)

    def describe(self, error: BaseException, provider: str | None = None) -> str:
        """A short description of an attempt's error, with this engine's secrets redacted.

        A provider that cannot be reached is named by its address and the setting to check."""
        text = describe(error, secrets=self.providers.secrets)
        if provider is not None and classify(error).kind in (FailureKind.CONNECTION, FailureKind.TIMEOUT):
            where = urlsplit(self.providers.specs[provider].base_url).netloc
            hint = self.providers.address_setting(provider)
            text += f" ({where}{f', {hint}' if hint else ''})"
        return text

    # -- one request

    def admission(self) -> AbstractAsyncContextManager[Any]:
        """Bounds LLM requests in flight (`max_concurrent_requests`); waiting here costs no provider time."""
        return self._admission if self._admission is not None else nullcontext()

    async def plan(self, *, pinned: str | None = None) -> Plan:
        """The attempt order for one request (no lease is taken until a target needs one)."""
        snapshot = await self.health.read()
        if pinned is not None:
            spec = self.providers.spec(pinned)
            providers = {pinned: spec.models} if spec.configured else {}
        else:
            providers = {p: self.providers.specs[p].models for p in self.configured}
        candidates = attempt_order(snapshot, providers, pinned=pinned if providers else None) if providers else []
        plan = Plan(self.health, self.events, snapshot, candidates, accounting=self.accounting,
                    models={p: spec.models for p, spec in self.providers.specs.items()}, describe=self.describe)
        log_choice(plan, self.primary)
        return plan

    def attempt(self, plan: Plan, target: Target, settings: ModelSettings | None, *, streamed: bool) -> ProviderAttempt:
        spec = self.providers.specs[target.provider]
        return ProviderAttempt(plan, target, self.providers.model(target.provider, target.model), settings,
                               streamed=streamed, loop_lag=self.loop_lag, describe=self.describe,
                               connect_timeout=spec.connect_timeout, generation_timeout=spec.timeout)

    async def report_all_failed(self, attempts: Sequence[FailedAttempt], *, context: str | None = None,
                                quiet: bool = False) -> AllProvidersFailedError:
        """Log and announce that no provider could answer; the error to raise.

        The model calls it when a plan is exhausted; a caller that restarts replies itself (a
        stream cut on every provider) calls it when it gives up, so admins hear of it the same way.
        `quiet`: a background call (a thread name) nobody waits for: one INFO line, no announcement,
        so one user message that meets an outage counts once.
        """
        attempts = list(attempts)
        where = f" [{context}]" if context else ""
        tried = "; ".join(map(str, attempts)) or "no provider configured"
        if quiet:
            logger.info("No LLM provider could answer%s (a background call): %s", where, tried)
        else:
            logger.error("❌ All LLM providers failed!%s %s", where, tried)
            await self.events.publish(HealthEvent("all_failed", attempts=tuple(attempts)))
        return AllProvidersFailedError(attempts)

    # -- the seed's management API

    def add_listener(self, listener: Listener) -> None:
        self.events.add(listener)

    async def get_working_provider(self, context: str | None = None) -> str:
        """The provider the next request would try first (no lease taken, no call made)."""
        if not self.configured:
            raise AllProvidersFailedError([])
        snapshot = await self.health.read()
        first = attempt_order(snapshot, {p: self.providers.specs[p].models for p in self.configured})[0].provider
        logger.debug("Working provider for %s: %s", context or "a request", first)
        return first

    async def report_provider_failure(self, provider: str, error: BaseException, context: str | None = None) -> None:
        """Mark a provider failed from outside a request (it cools down like a real failure)."""
        self.providers.spec(provider)
        verdict = classify(error)
        kind = verdict.kind if verdict.blame is Blame.COOLDOWN else FailureKind.UNKNOWN
        suffix = f" [{context}]" if context else ""
        await self.health.failed(None, provider, kind.value, self.describe(error, provider) + suffix,
                                 retry_after=verdict.retry_after)

    async def report_provider_success(self, provider: str, context: str | None = None) -> None:
        """Mark a provider healthy from outside a request: its cooldown ends, it becomes preferred."""
        self.providers.spec(provider)
        await self.health.mark_healthy(provider, why=context)

    async def force_provider(self, provider: str, duration_seconds: float = 1800) -> float:
        """Put `provider` first for `duration_seconds` (others stay behind it). Returns the end time."""
        check_force(provider, duration_seconds, order=self.order, configured=self.configured,
                    setting_hints=self.providers.setting_hints)
        if provider in (await self.health.read()).over_budget:
            logger.warning("💸 Provider %s is forced although its token budget for this period is spent: "
                           "it serves (and bills) until the force ends", provider)
        return await self.health.force(provider, duration_seconds)

    async def clear_cache(self) -> dict[str, Any]:
        """Forget everything the fallback learned: preferred, force, cooldowns, last errors, alerts.

        Returns what was cleared. The store's namespace holds only this plugin's state.
        """
        cleared: Cleared = await self.health.clear()
        self.hedging.clear()
        return {"preferred": cleared.preferred, "forced": cleared.forced, "cooldowns": cleared.cooldowns}

    async def status(self) -> FallbackStatus:
        snapshot = await self.health.read()
        return build_status(self.providers, snapshot, await self.health.last_errors(self.order),
                            await self.health.readiness(self.order), budgets=self.budgets, hedges_last_hour={p: self.hedging.hedges_last_hour(p) for p in self.order},
                            store=self.store.kind, hedging=self.hedging.enabled)

    async def get_provider_stats(self) -> dict[str, Any]:
        """The seed's status dict, plus cooldowns, last errors, force, hedges and store."""
        return (await self.status()).as_dict()

    async def check_providers(self, *, timeout: float = 10.0) -> dict[str, str | None]:
        """Ask each configured provider for a real 1-token completion now; record what it says.

        Returns None per provider that answered, else a short redacted reason.
        """
        providers = self.configured
        results = await asyncio.gather(*(check_provider(self.providers, self.health, p, timeout=timeout,
                                                        describe=self.describe) for p in providers))
        return dict(zip(providers, results, strict=True))

    async def announce_outdated_models(self) -> None:
        """Tell the listeners (admins) of each configured model its vendor retired or deprecated."""
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        for notice in outdated_models(self.providers.specs.values(), today=today):  # what the status lists
            kind = "model_retired" if notice.lifecycle is Lifecycle.RETIRED else "model_deprecated"
            date = notice.retirement_date.isoformat() if notice.retirement_date else None
            await self.events.publish(HealthEvent(kind, notice.provider, model=notice.model, date=date,
                                                  replacement=notice.replacement))

    async def aclose(self) -> None:
        await self.background.stop()
        self.loop_lag.stop()
        await self.providers.aclose()
        await self.store.close()


def _retired(kind: str, model: str) -> bool:
    """Retired by its vendor, its requests failing (not answered by a successor)."""
    status = model_status(kind, model)
    return status.lifecycle is Lifecycle.RETIRED and status.rerouted_to is None

"""`LLMProviderFallback`: the providers, their shared health, and the seed's management API.

Per LLM request the model asks for a `Plan` (`plan()`): one read of the shared state (one
Redis `MGET`) and the attempt order from `routing.py`. The plan hands out attempts one at a
time, taking a probe lease only for the half-open provider it is about to try, and every
attempt reports its real end back exactly once (`Plan.succeeded` / `Plan.failed`). What is
stored under which key is `state.py`; what an error means is `errors.py`.

Cooldowns grow on consecutive failed probes (`ejections × LLM_FAILURE_COOLDOWN`, capped at
`max_cooldown`) as Envoy's outlier detection does, and reset on a real success. A timeout that
this process's event-loop lag explains (`loop_lag.py`) fails that request over but blames
nobody. Times in stored values come from the injected clock: tests never sleep.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

from pydantic_ai.models import Model

from .checks import check_provider
from .errors import (
    AllProvidersFailedError,
    FailedAttempt,
    FailureKind,
    Verdict,
    classify,
    describe,
    redact,
)
from .events import Event, HealthEvent, HedgeEvent, Listener
from .hedging import HedgePolicy
from .loop_lag import LoopLagMonitor
from .plan import Plan, Step
from .providers import ProviderClient, ProviderSpec
from .routing import attempt_order
from .state import (
    FAILURE_MEMORY,
    FORCED,
    PREFERRED,
    Choice,
    FailureRecord,
    Snapshot,
    StateKeys,
    cooldown_key,
    last_error_key,
    probe_key,
)
from .status import provider_stats
from .stores import Clock, StateStore

logger = logging.getLogger("llm_fallback")

MAX_RETRY_AFTER = 3600.0
"""Upper bound for a provider's `Retry-After`."""
MIN_FORCE_SECONDS = 10
MAX_FORCE_SECONDS = 24 * 3600
STRIKES_TO_COOL = 3
"""Bad replies (empty, or output the agent could not use) within one cooldown window that cool a provider."""
HEDGE_WINDOW = 3600.0
SLOW_LOSSES_TO_COOL = 3
"""Hedges lost in a row without a first event that cool a provider down (as a timeout)."""

AUTH_SETTING_HINT = {"openai": "OPENAI_API_KEY", "ollama": "OLLAMA_URL"}


class LLMProviderFallback:
    """Provider order, health and the seed's management API, over a shared `StateStore`."""

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
    ):
        if not providers:
            raise ValueError("at least one provider is required")
        if failure_cooldown <= 0 or preferred_ttl <= 0:
            raise ValueError("failure_cooldown and preferred_ttl must be positive")
        if max_concurrent_requests is not None and max_concurrent_requests < 1:
            raise ValueError("max_concurrent_requests must be at least 1")
        self.specs: dict[str, ProviderSpec] = {spec.name: spec for spec in providers}
        self.store = store
        self.failure_cooldown = float(failure_cooldown)
        self.max_cooldown = float(max_cooldown if max_cooldown is not None else max(failure_cooldown, 3600.0))
        self.preferred_ttl = float(preferred_ttl)
        self.clock = clock
        self.listeners: list[Listener] = []
        self.loop_lag = loop_lag or LoopLagMonitor()
        self._secrets = tuple(s for spec in providers for s in spec.secrets)
        self.clients: dict[str, ProviderClient] = {}
        if models is None:
            self.clients = {spec.name: ProviderClient(spec) for spec in providers if spec.configured}
            models = {name: client.models for name, client in self.clients.items()}
        self.models: dict[str, Mapping[str, Model]] = dict(models)
        self._keys = StateKeys({name: spec.models for name, spec in self.specs.items()})
        self._strikes: dict[str, deque[float]] = {}
        self._hedges: dict[str, deque[float]] = {}
        self._admission = asyncio.Semaphore(max_concurrent_requests) if max_concurrent_requests else None
        self.max_concurrent_requests = max_concurrent_requests
        self.hedge = HedgePolicy.from_setting(hedge_delay)
        self._background: set[asyncio.Task[None]] = set()
        self._logged_preferred: str | None = None
        self._slow_losses: dict[str, int] = {}
        logger.info("✅ LLMProviderFallback initialized")
        logger.info("🔧 Provider order: %s", " → ".join(self.order))
        logger.info("🔧 Primary: %s, Fallback: %s", self.primary, ", ".join(self.order[1:]) or "none")

    # -- basic facts

    @property
    def order(self) -> list[str]:
        """Every provider, in priority order (configured or not)."""
        return list(self.specs)

    @property
    def configured(self) -> list[str]:
        return [name for name, spec in self.specs.items() if spec.configured]

    @property
    def primary(self) -> str:
        return self.order[0]

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def describe(self, error: BaseException) -> str:
        """A short description of an attempt's error, with this engine's secrets redacted."""
        return describe(error, secrets=self._secrets)

    def _spec(self, provider: str) -> ProviderSpec:
        spec = self.specs.get(provider)
        if spec is None:
            raise ValueError(f"unknown provider {provider!r}; known: {', '.join(self.order)}")
        return spec

    def admission(self) -> AbstractAsyncContextManager[Any]:
        """Bounds LLM requests in flight (`max_concurrent_requests`); waiting here costs no provider time."""
        return self._admission if self._admission is not None else nullcontext()

    # -- reading the state

    async def snapshot(self) -> Snapshot:
        return await self._keys.read(self.store, self.clock())

    async def plan(self, *, pinned: str | None = None) -> Plan:
        """The attempt order for one request (no lease is taken until a step needs one)."""
        snapshot = await self.snapshot()
        if pinned is not None:
            spec = self._spec(pinned)
            providers = {pinned: spec.models} if spec.configured else {}
        else:
            providers = {p: self.specs[p].models for p in self.configured}
        candidates = attempt_order(snapshot, providers, pinned=pinned if providers else None) if providers else []
        plan = Plan(self, snapshot, candidates)
        self._log_choice(plan)
        return plan

    def _log_choice(self, plan: Plan) -> None:
        if not plan.candidates:
            return
        first = plan.candidates[0]
        preferred = plan.snapshot.preferred.provider if plan.snapshot.preferred else None
        if first.reason == "last_resort":
            logger.warning("⚠️ Every provider is cooling down; trying all of them anyway: %s", " → ".join(plan.order))
        elif first.reason == "half_open":
            logger.info("🔎 Cooldown of %s is over; the next request to reach it probes it", first.provider)
        elif preferred and preferred != first.provider and plan.snapshot.cooling(preferred):
            logger.debug("⚠️ Cached provider %s is unhealthy, finding alternative...", preferred)
        elif preferred == first.provider:
            logger.debug("✅ Using cached provider: %s", first.provider)
        elif first.provider == self.primary:
            logger.debug("✅ Using primary provider: %s", first.provider)

    # -- probe leases

    async def _take_probe(self, snapshot: Snapshot, provider: str, model: str | None = None) -> tuple[str, str] | None:
        """The probe lease of a half-open provider (or model), if no other request holds it.

        The failure record is read again once the lease is ours: a probe that failed since our
        snapshot wrote a new cooldown before releasing its lease, and that cooldown wins.
        """
        key = probe_key(provider, model)
        token = secrets.token_hex(8)
        lease_seconds = self.specs[provider].timeout + 5.0
        if not await self.store.set(key, token, lease_seconds, only_if_absent=True):
            return None
        seen = snapshot.failure(provider, model)
        (current,) = await self.store.get_many([cooldown_key(provider, model)])
        if seen is None or current != seen.raw:
            await self.store.delete_if_equal(key, token)
            return None
        return key, token

    async def _release(self, plan: Plan, step: Step, *, provider_too: bool) -> None:
        """Give back the step's model probe lease and, with `provider_too`, its provider's."""
        if step.lease is not None:
            await self.store.delete_if_equal(*step.lease)
        if provider_too:
            await plan.release_provider(step.provider)

    # -- recording outcomes

    async def _record_success(self, plan: Plan, step: Step) -> None:
        snapshot = plan.snapshot
        provider, model = step.provider, step.model.name
        seen = snapshot.failure(provider)
        # Clear the failure we saw; a newer one (another request failing since) stays.
        if seen is not None and await self.store.delete_if_equal(cooldown_key(provider), seen.raw):
            logger.warning("✅ Provider %s recovered after %s (%s)", provider, seen.kind, seen.error)
            await self._emit(HealthEvent("recovered", provider))
        seen_model = snapshot.failure(provider, model)
        if seen_model is not None:
            await self.store.delete_if_equal(cooldown_key(provider, model), seen_model.raw)
        self._slow_losses.pop(provider, None)
        await self._release(plan, step, provider_too=True)
        await self._remember_preferred(snapshot, provider)

    async def _remember_preferred(self, snapshot: Snapshot, provider: str) -> None:
        """Keep `preferred` pointing at the last provider that served, refreshing it lazily."""
        current = snapshot.preferred
        if current is not None and current.provider == provider and current.until - snapshot.now > self.preferred_ttl / 2:
            return
        until = self.clock() + self.preferred_ttl
        await self.store.set(PREFERRED, Choice(provider, until).dump(), self.preferred_ttl)
        if provider != self._logged_preferred:  # a change, logged once (not once per request of a burst)
            self._logged_preferred = provider
            logger.info("✅ Provider %s healthy, cached as preferred", provider)

    def _cooldown_for(self, verdict: Verdict, ejections: int) -> float:
        if verdict.retry_after is not None:
            return min(max(verdict.retry_after, 1.0), MAX_RETRY_AFTER)
        return min(self.failure_cooldown * ejections, self.max_cooldown)

    async def _record_failure(self, plan: Plan | None, step: Step | None, verdict: Verdict, error: str,
                              *, provider: str | None = None) -> None:
        """Start (or grow) the cooldown of the step's provider, or of its model for a 404."""
        now = self.clock()
        error = self.redact(error)
        provider = step.provider if step is not None else provider
        assert provider is not None
        model = step.model.name if step is not None and verdict.kind is FailureKind.MODEL_MISSING else None
        key = cooldown_key(provider, model)
        seen = plan.snapshot.failure(provider, model) if plan is not None else None
        if plan is None:
            (raw,) = await self.store.get_many([key])
            seen = FailureRecord.parse(raw)
        if seen is not None and seen.until > now:
            # Still cooling (a last resort, a forced provider, a request in flight): count it, keep the end.
            record = FailureRecord(seen.until, now, verdict.kind.value, error, seen.count + 1, seen.ejections)
            started = False
        else:
            ejections = seen.ejections + 1 if seen is not None else 1
            cooldown = self._cooldown_for(verdict, ejections)
            record = FailureRecord(now + cooldown, now, verdict.kind.value, error,
                                   (seen.count if seen else 0) + 1, ejections)
            started = True
        ttl = max(record.until - now, 1.0) + FAILURE_MEMORY
        # Only the first failure after what this request saw writes: requests that were in flight
        # and fail later must not push the cooldown's end (and the next probe) back.
        if seen is None:
            recorded = await self.store.set(key, record.dump(), ttl, only_if_absent=True)
        else:
            recorded = await self.store.replace_if_equal(key, seen.raw, record.dump(), ttl)
        if step is not None and plan is not None:
            await self._release(plan, step, provider_too=model is None)
        target = f"{provider}/{model}" if model else provider
        if not recorded:
            logger.debug("Provider %s failed too (already cooling down): %s", target, error)
            return
        await self.store.set(last_error_key(provider), record.dump(), FAILURE_MEMORY)
        if not started:
            logger.info("Provider %s failed again while cooling down: %s", target, error)
            return
        cooldown = record.until - now
        grown = f", ×{record.ejections}" if record.ejections > 1 else ""
        logger.warning("⚠️ Provider %s failed: %s (cooldown: %ds%s)", target, error, round(cooldown), grown)
        if verdict.kind is FailureKind.AUTH:
            logger.error("❌ Provider %s rejected our credentials: check %s", provider,
                         AUTH_SETTING_HINT.get(provider, f"the API key of {provider}"))
        if model is None:
            await self._emit(HealthEvent("down", provider, error=error, cooldown=cooldown,
                                         has_working_fallback=await self._has_working_fallback(provider)))

    async def _has_working_fallback(self, provider: str) -> bool:
        snapshot = await self.snapshot()
        return any(p != provider and not snapshot.cooling(p) for p in self.configured)

    def _struck_out(self, provider: str) -> bool:
        """Count one unusable reply of `provider`; True once that makes `STRIKES_TO_COOL` in one
        cooldown window (the strikes then start over)."""
        now = self.clock()
        strikes = self._strikes.setdefault(provider, deque())
        strikes.append(now)
        while strikes and strikes[0] < now - self.failure_cooldown:
            strikes.popleft()
        if len(strikes) < STRIKES_TO_COOL:
            return False
        strikes.clear()
        return True

    async def _strike(self, plan: Plan, step: Step, verdict: Verdict, error: str) -> bool:
        """A bad reply: that request falls back; `STRIKES_TO_COOL` of them in a window cool the provider."""
        if not self._struck_out(step.provider):
            logger.info("Provider %s gave an unusable reply (%s): %d of %d before a cooldown",
                        step.provider, error, len(self._strikes[step.provider]), STRIKES_TO_COOL)
            await self._release(plan, step, provider_too=True)
            return False
        await self._record_failure(plan, step, Verdict(verdict.kind, True, True), error)
        return True

    async def _slow_loss(self, plan: Plan, step: Step) -> bool:
        """A hedge won while `step` had produced nothing: `SLOW_LOSSES_TO_COOL` in a row cool the provider.

        A hung provider behind a hedge would otherwise never be cooled (its attempts are always
        cancelled before their own timeout), and every request would wait the hedge delay for it.
        """
        losses = self._slow_losses.get(step.provider, 0) + 1
        self._slow_losses[step.provider] = losses
        if losses < SLOW_LOSSES_TO_COOL:
            return False
        self._slow_losses.pop(step.provider, None)
        await self._record_failure(plan, step, Verdict(FailureKind.TIMEOUT, True, True),
                                   f"no first token within the hedge delay, {losses} times in a row")
        return True

    async def rejected_output(self, plan: Plan, provider: str) -> None:
        """The agent could not use `provider`'s last reply (it asks again): strike it, ask another."""
        if provider not in self.specs:
            return
        plan.demote(provider)
        logger.info("Provider %s replied with output the agent could not use; asking another provider", provider)
        if self._struck_out(provider):
            await self._record_failure(None, None, Verdict(FailureKind.MALFORMED, True, True),
                                       "replies the agent could not use", provider=provider)

    def hedged(self, provider: str, to_provider: str, delay: float) -> None:
        now = self.clock()
        hedges = self._hedges.setdefault(provider, deque())
        hedges.append(now)
        while hedges and hedges[0] < now - HEDGE_WINDOW:
            hedges.popleft()
        logger.info("🐢 %s had no first token after %.2fs: hedging with %s", provider, delay, to_provider)
        self._emit_now(HedgeEvent(provider, to_provider, delay))

    def hedges_last_hour(self, provider: str) -> int:
        now = self.clock()
        return sum(1 for t in self._hedges.get(provider, ()) if t >= now - HEDGE_WINDOW)

    async def all_failed(self, plan: Plan) -> AllProvidersFailedError:
        return await self.report_all_failed(plan.failures)

    async def report_all_failed(self, attempts: Sequence[FailedAttempt]) -> AllProvidersFailedError:
        """Log and announce that no provider could answer; the error to raise.

        The model calls it when a plan is exhausted; a caller that restarts replies itself (a
        stream cut on every provider) calls it when it gives up, so admins hear of it the same way.
        """
        attempts = list(attempts)
        error = AllProvidersFailedError(attempts)
        logger.error("❌ All LLM providers failed! %s", "; ".join(map(str, attempts)) or "no provider configured")
        await self._emit(HealthEvent("all_failed", attempts=tuple(attempts)))
        return error

    # -- events

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def _emit(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                result = listener(event)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                logger.exception("LLM fallback listener failed")

    def _emit_now(self, event: Event) -> None:
        """Emit without waiting (attempt events are frequent): async listeners run in the background."""
        for listener in self.listeners:
            try:
                result = listener(event)
                if asyncio.iscoroutine(result):
                    task = asyncio.get_running_loop().create_task(result)
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            except Exception:
                logger.exception("LLM fallback listener failed")

    # -- the seed's management API

    async def get_working_provider(self, context: str | None = None) -> str:
        """The provider the next request would try first (no lease taken, no call made)."""
        snapshot = await self.snapshot()
        if snapshot.forced and snapshot.forced.provider in self.configured:
            return snapshot.forced.provider
        for provider in self.configured:
            if not snapshot.cooling(provider):
                return provider
        if not self.configured:
            raise AllProvidersFailedError([])
        return self.configured[0]

    async def report_provider_failure(self, provider: str, error: BaseException, context: str | None = None) -> None:
        """Mark a provider failed from outside a request (it cools down like a real failure)."""
        self._spec(provider)
        verdict = classify(error)
        if not verdict.cool_down or verdict.kind is FailureKind.MODEL_MISSING:
            verdict = Verdict(verdict.kind, fall_back=True, cool_down=True)
        suffix = f" [{context}]" if context else ""
        await self._record_failure(None, None, verdict, self.describe(error) + suffix, provider=provider)

    async def report_provider_success(self, provider: str, context: str | None = None) -> None:
        """Mark a provider healthy from outside a request: its cooldown ends, it becomes preferred."""
        self._spec(provider)
        snapshot = await self.snapshot()
        await self._clear_failure(provider)
        await self._remember_preferred(snapshot, provider)

    async def _clear_failure(self, provider: str) -> None:
        self._strikes.pop(provider, None)
        if await self.store.delete(cooldown_key(provider)):
            logger.warning("✅ Provider %s marked healthy", provider)
            await self._emit(HealthEvent("recovered", provider))

    async def force_provider(self, provider: str, duration_seconds: float = 1800) -> float:
        """Put `provider` first for `duration_seconds` (others stay behind it). Returns the end time."""
        spec = self._spec(provider)
        if not spec.configured:
            raise ValueError(f"provider {provider!r} is not configured")
        if not MIN_FORCE_SECONDS <= duration_seconds <= MAX_FORCE_SECONDS:
            raise ValueError(f"duration must be between {MIN_FORCE_SECONDS} and {MAX_FORCE_SECONDS} seconds")
        until = self.clock() + duration_seconds
        await self.store.set(FORCED, Choice(provider, until).dump(), duration_seconds)
        logger.warning("🔧 Provider %s forced for %ds", provider, round(duration_seconds))
        return until

    async def clear_cache(self) -> dict[str, Any]:
        """Forget everything the fallback learned: preferred, force, cooldowns, last errors, alerts.

        Returns what was cleared. The store's namespace holds only this plugin's state.
        """
        snapshot = await self.snapshot()
        cleared = {
            "preferred": snapshot.preferred.provider if snapshot.preferred else None,
            "forced": snapshot.forced.provider if snapshot.forced else None,
            "cooldowns": sorted(
                {p for p, r in snapshot.failures.items() if r} | {p for (p, _), r in snapshot.model_failures.items() if r}
            ),
        }
        await self.store.clear("*")
        self._strikes.clear()
        self._hedges.clear()
        self._slow_losses.clear()
        logger.warning("🔧 LLM provider cache cleared: %s", cleared)
        return cleared

    async def get_provider_stats(self) -> dict[str, Any]:
        """The seed's status dict, plus cooldowns, last errors, force, hedges and store."""
        snapshot = await self.snapshot()
        last_errors = await self.store.get_many([last_error_key(p) for p in self.order])
        return provider_stats(self, snapshot, dict(zip(self.order, last_errors, strict=True)))

    async def check_providers(self, *, timeout: float = 10.0) -> dict[str, str | None]:
        """Ask each configured provider for a real 1-token completion now; record what it says.

        Returns None per provider that answered, else a short redacted reason.
        """
        providers = self.configured
        results = await asyncio.gather(*(check_provider(self, p, timeout=timeout) for p in providers))
        return dict(zip(providers, results, strict=True))

    async def aclose(self) -> None:
        self.loop_lag.stop()
        for client in self.clients.values():
            await client.aclose()
        await self.store.close()

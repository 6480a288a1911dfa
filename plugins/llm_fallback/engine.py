"""The failover state machine: which providers to try, in what order, and what to remember.

`LLMProviderFallback` owns the provider definitions and the shared health state (a
`StateStore`). Per LLM request it reads the state once (one Redis `MGET`) and returns a
`Plan`: the attempt order

1. a forced provider (`force_provider`) first, whatever its health;
2. then providers in priority order, skipping those in cooldown;
3. a provider whose cooldown has expired is half-open: one request across all processes
   (a `SET NX PX` lease) probes it, the others skip it meanwhile;
4. everything skipped goes last (last resort): never stop for want of trying.

Attempts report back through the plan (`succeeded` / `failed`). Health is learned only from
real calls; `check_providers()` is an explicit probe for admins.

Times in stored values come from the injected clock, so the state machine is tested without
sleeping; store TTLs only garbage-collect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic_ai.models import Model

from .errors import (
    AllProvidersFailedError,
    Attempt,
    FailureKind,
    ProviderFailure,
    Verdict,
    classify,
    describe,
    redact,
)
from .events import HealthEvent, Listener
from .providers import ProviderClient, ProviderSpec
from .stores import Clock, StateStore

logger = logging.getLogger("llm_fallback")

FAILURE_MEMORY = 24 * 3600.0
"""How long a failure is remembered after its cooldown (half-open until a success)."""
MAX_RETRY_AFTER = 3600.0
"""Upper bound for a provider's `Retry-After`."""
MIN_FORCE_SECONDS = 10
MAX_FORCE_SECONDS = 24 * 3600

AUTH_SETTING_HINT = {"openai": "OPENAI_API_KEY", "ollama": "OLLAMA_URL"}


# --- stored records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureRecord:
    """A provider's (or one model's) last failure; its cooldown ends at `until`."""

    until: float
    at: float
    kind: str
    error: str
    count: int
    raw: str = field(default="", compare=False, repr=False)

    @classmethod
    def parse(cls, raw: str | None) -> FailureRecord | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(float(data["until"]), float(data["at"]), str(data["kind"]), str(data["error"]),
                       int(data["count"]), raw)
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps({"until": self.until, "at": self.at, "kind": self.kind, "error": self.error,
                           "count": self.count})


@dataclass(frozen=True)
class Lease:
    """A provider chosen until `until` (the preferred or the forced one)."""

    provider: str
    until: float

    @classmethod
    def parse(cls, raw: str | None, now: float) -> Lease | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            lease = cls(str(data["provider"]), float(data["until"]))
        except (ValueError, KeyError, TypeError):
            return None
        return lease if lease.until > now else None

    def dump(self) -> str:
        return json.dumps({"provider": self.provider, "until": self.until})


def _cooldown_key(provider: str, model: str | None = None) -> str:
    return f"cooldown:{provider}" if model is None else f"cooldown:{provider}/{model}"


# --- the plan for one request ---------------------------------------------------------------------


@dataclass
class Candidate:
    """One provider to try for this request, with the models to try in order."""

    provider: str
    models: list[str]
    reason: Literal["forced", "pinned", "healthy", "probe", "last_resort"]
    probe_token: str | None = None


@dataclass
class Snapshot:
    """The shared state as read at the start of a request."""

    now: float
    forced: Lease | None
    preferred: Lease | None
    failures: dict[str, FailureRecord | None]
    model_failures: dict[tuple[str, str], FailureRecord | None]

    def cooling(self, provider: str) -> bool:
        record = self.failures.get(provider)
        return record is not None and record.until > self.now

    def half_open(self, provider: str) -> bool:
        record = self.failures.get(provider)
        return record is not None and record.until <= self.now

    def model_cooling(self, provider: str, model: str) -> bool:
        record = self.model_failures.get((provider, model))
        return record is not None and record.until > self.now


class Plan:
    """The attempt order for one request, and the way its attempts report back."""

    def __init__(self, engine: LLMProviderFallback, snapshot: Snapshot, candidates: list[Candidate]):
        self.engine = engine
        self.snapshot = snapshot
        self.candidates = candidates
        self.failed_providers: list[str] = []
        self._settled: set[str] = set()

    @property
    def order(self) -> list[str]:
        return [c.provider for c in self.candidates]

    def candidate(self, provider: str) -> Candidate:
        return next(c for c in self.candidates if c.provider == provider)

    async def succeeded(self, provider: str, model: str) -> None:
        self._settled.add(provider)
        await self.engine._record_success(self, provider, model)

    async def failed(self, provider: str, model: str, error: BaseException, *, streamed: bool = False) -> Verdict:
        verdict = classify(error, streamed_first_event=streamed)
        if verdict.cool_down:
            if verdict.kind is not FailureKind.MODEL_MISSING:
                self.failed_providers.append(provider)
                self._settled.add(provider)
            await self.engine._record_failure(self, provider, model, verdict, self.engine.describe(error))
        return verdict

    async def release(self) -> None:
        """Give back probe leases this request took but did not settle (skipped or cancelled)."""
        for candidate in self.candidates:
            if candidate.probe_token and candidate.provider not in self._settled:
                await self.engine._release_probe(candidate.provider, candidate.probe_token)


# --- the engine --------------------------------------------------------------------------------------


class LLMProviderFallback:
    """Provider order, health and the seed's management API, over a shared `StateStore`."""

    def __init__(
        self,
        providers: Sequence[ProviderSpec],
        store: StateStore,
        *,
        failure_cooldown: float = 300.0,
        preferred_ttl: float = 1800.0,
        clock: Clock = time.time,
        models: Mapping[str, Mapping[str, Model]] | None = None,
    ):
        if not providers:
            raise ValueError("at least one provider is required")
        if failure_cooldown <= 0 or preferred_ttl <= 0:
            raise ValueError("failure_cooldown and preferred_ttl must be positive")
        self.specs: dict[str, ProviderSpec] = {spec.name: spec for spec in providers}
        self.store = store
        self.failure_cooldown = float(failure_cooldown)
        self.preferred_ttl = float(preferred_ttl)
        self.clock = clock
        self.listeners: list[Listener] = []
        self._secrets = tuple(s for spec in providers for s in spec.secrets)
        self.clients: dict[str, ProviderClient] = {}
        if models is None:
            self.clients = {spec.name: ProviderClient(spec) for spec in providers if spec.configured}
            models = {name: client.models for name, client in self.clients.items()}
        self.models: dict[str, Mapping[str, Model]] = dict(models)
        self._state_keys = ["forced", "preferred"] + [
            key for spec in providers for key in [_cooldown_key(spec.name)] + [
                _cooldown_key(spec.name, m) for m in spec.models]
        ]
        order = " → ".join(self.order)
        logger.info("✅ LLMProviderFallback initialized")
        logger.info("🔧 Provider order: %s", order)
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

    # -- reading the state

    async def snapshot(self) -> Snapshot:
        values = await self.store.get_many(self._state_keys)
        now = self.clock()
        by_key = dict(zip(self._state_keys, values, strict=True))
        return Snapshot(
            now=now,
            forced=Lease.parse(by_key["forced"], now),
            preferred=Lease.parse(by_key["preferred"], now),
            failures={p: FailureRecord.parse(by_key[_cooldown_key(p)]) for p in self.specs},
            model_failures={
                (p, m): FailureRecord.parse(by_key[_cooldown_key(p, m)])
                for p, spec in self.specs.items() for m in spec.models
            },
        )

    async def plan(self, *, pin: str | None = None) -> Plan:
        """The attempt order for one request (takes a probe lease for a half-open provider)."""
        snapshot = await self.snapshot()
        if pin is not None:
            spec = self._spec(pin)
            candidates = [Candidate(pin, list(spec.models), "pinned")] if spec.configured else []
            return Plan(self, snapshot, candidates)
        candidates: list[Candidate] = []
        tail: list[Candidate] = []
        forced = snapshot.forced.provider if snapshot.forced and snapshot.forced.provider in self.configured else None
        if forced:
            candidates.append(Candidate(forced, list(self.specs[forced].models), "forced"))
        for provider in self.configured:
            if provider == forced:
                continue
            all_models = list(self.specs[provider].models)
            models = [m for m in all_models if not snapshot.model_cooling(provider, m)]
            if models and not snapshot.failures.get(provider):
                candidates.append(Candidate(provider, models, "healthy"))
            elif models and snapshot.half_open(provider) and (token := await self._take_probe(provider, snapshot)):
                candidates.append(Candidate(provider, models, "probe", probe_token=token))
            else:
                tail.append(Candidate(provider, all_models, "last_resort"))
        plan = Plan(self, snapshot, candidates + tail)
        self._log_choice(plan, has_healthy=bool(candidates))
        return plan

    def _log_choice(self, plan: Plan, *, has_healthy: bool) -> None:
        if not plan.candidates:
            return
        first = plan.candidates[0]
        preferred = plan.snapshot.preferred.provider if plan.snapshot.preferred else None
        if not has_healthy:
            logger.warning("⚠️ Every provider is cooling down; trying all of them anyway: %s",
                           " → ".join(plan.order))
        elif first.reason == "probe":
            logger.info("🔎 Cooldown of %s expired; this request probes it", first.provider)
        elif preferred and preferred != first.provider and plan.snapshot.cooling(preferred):
            logger.info("⚠️ Cached provider %s is unhealthy, finding alternative...", preferred)
        elif preferred == first.provider:
            logger.debug("✅ Using cached provider: %s", first.provider)
        elif first.provider == self.primary:
            logger.debug("✅ Using primary provider: %s", first.provider)

    # -- recording outcomes

    async def _take_probe(self, provider: str, snapshot: Snapshot) -> str | None:
        """The probe lease of a half-open provider, if no other request holds it.

        The failure record is read again once the lease is ours: a probe that failed since our
        snapshot wrote a new cooldown before releasing its lease, and that cooldown wins.
        """
        token = secrets.token_hex(8)
        lease = self.specs[provider].timeout + 5.0
        if not await self.store.set(f"probe:{provider}", token, lease, only_if_absent=True):
            return None
        seen = snapshot.failures[provider]
        (current,) = await self.store.get_many([_cooldown_key(provider)])
        if seen is None or current != seen.raw:
            await self._release_probe(provider, token)
            return None
        return token

    async def _release_probe(self, provider: str, token: str) -> None:
        await self.store.delete_if_equal(f"probe:{provider}", token)

    async def _record_success(self, plan: Plan, provider: str, model: str) -> None:
        snapshot = plan.snapshot
        candidate = plan.candidate(provider)
        seen = snapshot.failures.get(provider)
        if seen is not None:
            # Clear the failure we saw; a newer one (another request failing since) stays.
            if await self.store.delete_if_equal(_cooldown_key(provider), seen.raw):
                logger.warning("✅ Provider %s recovered after %s (%s)", provider, seen.kind, seen.error)
                await self._emit(HealthEvent("recovered", provider))
        seen_model = snapshot.model_failures.get((provider, model))
        if seen_model is not None:
            await self.store.delete_if_equal(_cooldown_key(provider, model), seen_model.raw)
        if candidate.probe_token:
            await self._release_probe(provider, candidate.probe_token)
        await self._remember_preferred(snapshot, provider)
        if plan.failed_providers and provider != plan.failed_providers[0]:
            logger.warning("⚠️ Primary provider failed, using fallback: %s", provider)

    async def _remember_preferred(self, snapshot: Snapshot, provider: str) -> None:
        """Keep `preferred` pointing at the last provider that served, refreshing it lazily."""
        current = snapshot.preferred
        if current is not None and current.provider == provider and current.until - snapshot.now > self.preferred_ttl / 2:
            return
        until = self.clock() + self.preferred_ttl
        await self.store.set("preferred", Lease(provider, until).dump(), self.preferred_ttl)
        if current is None or current.provider != provider:
            logger.info("✅ Provider %s healthy, cached as preferred", provider)

    async def _record_failure(self, plan: Plan | None, provider: str, model: str | None, verdict: Verdict,
                              error: str) -> None:
        now = self.clock()
        error = self.redact(error)
        model_level = verdict.kind is FailureKind.MODEL_MISSING and model is not None
        key = _cooldown_key(provider, model if model_level else None)
        seen = None
        if plan is not None:
            seen = plan.snapshot.model_failures.get((provider, model)) if model_level else plan.snapshot.failures.get(provider)
        cooldown = self.failure_cooldown
        if verdict.retry_after is not None:
            cooldown = min(max(verdict.retry_after, 1.0), MAX_RETRY_AFTER)
        record = FailureRecord(now + cooldown, now, verdict.kind.value, error, (seen.count if seen else 0) + 1)
        # Only the first failure after what this request saw starts a cooldown: requests that were
        # already in flight and fail later must not push its end (and the next probe) back.
        if plan is None:
            recorded = await self.store.set(key, record.dump(), cooldown + FAILURE_MEMORY)
        elif seen is None:
            recorded = await self.store.set(key, record.dump(), cooldown + FAILURE_MEMORY, only_if_absent=True)
        else:
            recorded = await self.store.replace_if_equal(key, seen.raw, record.dump(), cooldown + FAILURE_MEMORY)
        if plan is not None and not model_level:
            token = plan.candidate(provider).probe_token
            if token:
                await self._release_probe(provider, token)
        target = f"{provider}/{model}" if model_level else provider
        if not recorded:
            logger.debug("Provider %s failed too (already cooling down): %s", target, error)
            return
        await self.store.set(f"last_error:{provider}", record.dump(), FAILURE_MEMORY)
        logger.warning("⚠️ Provider %s failed: %s (cooldown: %ds)", target, error, round(cooldown))
        if verdict.kind is FailureKind.AUTH:
            logger.error("❌ Provider %s rejected our credentials: check %s", provider,
                         AUTH_SETTING_HINT.get(provider, f"the API key of {provider}"))
        if not model_level and (seen is None or seen.until <= now):
            await self._emit(HealthEvent("down", provider, error=error, cooldown=cooldown))

    async def all_failed(self, attempts: Sequence[Attempt]) -> AllProvidersFailedError:
        error = AllProvidersFailedError(attempts)
        logger.error("❌ All LLM providers failed! %s", "; ".join(map(str, attempts)) or "no provider configured")
        await self._emit(HealthEvent("all_failed", attempts=tuple(attempts)))
        return error

    async def _emit(self, event: HealthEvent) -> None:
        for listener in self.listeners:
            try:
                result = listener(event)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # noqa: BLE001 - an alert must never break an LLM call
                logger.exception("health listener failed")

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
            verdict = Verdict(verdict.kind, fail_over=True, cool_down=True)
        suffix = f" [{context}]" if context else ""
        await self._record_failure(None, provider, None, verdict, self.describe(error) + suffix)

    async def report_provider_success(self, provider: str, context: str | None = None) -> None:
        """Mark a provider healthy from outside a request: its cooldown ends, it becomes preferred."""
        self._spec(provider)
        snapshot = await self.snapshot()
        await self._clear_failure(provider)
        await self._remember_preferred(snapshot, provider)

    async def _clear_failure(self, provider: str) -> None:
        if await self.store.delete(_cooldown_key(provider)):
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
        await self.store.set("forced", Lease(provider, until).dump(), duration_seconds)
        logger.warning("🔧 Provider %s forced for %ds", provider, round(duration_seconds))
        return until

    async def clear_cache(self) -> dict[str, Any]:
        """Forget the preferred provider, every cooldown and the force. Returns what was cleared."""
        snapshot = await self.snapshot()
        cleared = {
            "preferred": snapshot.preferred.provider if snapshot.preferred else None,
            "forced": snapshot.forced.provider if snapshot.forced else None,
            "cooldowns": sorted(
                {p for p, r in snapshot.failures.items() if r} | {p for (p, _), r in snapshot.model_failures.items() if r}
            ),
        }
        await self.store.delete("preferred", "forced")
        await self.store.clear("cooldown:*")
        await self.store.clear("probe:*")
        logger.warning("🔧 LLM provider cache cleared: %s", cleared)
        return cleared

    async def get_provider_stats(self) -> dict[str, Any]:
        """The seed's status dict, plus cooldowns, last errors, force and store."""
        snapshot = await self.snapshot()
        now = snapshot.now
        last_errors = await self.store.get_many([f"last_error:{p}" for p in self.order])
        health: dict[str, Any] = {}
        for provider, raw_error in zip(self.order, last_errors, strict=True):
            spec = self.specs[provider]
            record = snapshot.failures.get(provider)
            last = FailureRecord.parse(raw_error)
            cooling = snapshot.cooling(provider)
            state = ("not_configured" if not spec.configured else "cooling" if cooling
                     else "half_open" if record else "healthy")
            health[provider] = {
                "healthy": spec.configured and record is None,
                "configured": spec.configured,
                "available": spec.configured and not cooling,
                "state": state,
                "cooldown_seconds_left": round(record.until - now) if record and cooling else 0,
                "failures": record.count if record else 0,
                "last_error": last.error if last else None,
                "last_error_kind": last.kind if last else None,
                "last_error_seconds_ago": round(now - last.at) if last else None,
                "models": list(spec.models),
                "unavailable_models": [m for m in spec.models if snapshot.model_cooling(provider, m)],
            }
        forced = snapshot.forced
        return {
            "primary_provider": self.primary,
            "fallback_provider": self.order[1] if len(self.order) > 1 else None,
            "provider_order": self.order,
            "preferred_provider": snapshot.preferred.provider if snapshot.preferred else None,
            "forced_provider": forced.provider if forced else None,
            "forced_seconds_left": round(forced.until - now) if forced else None,
            "store": self.store.kind,
            "provider_health": health,
        }

    async def check_providers(self) -> dict[str, str | None]:
        """Probe each configured provider's cheap endpoint now; record what it says."""
        results = await asyncio.gather(*(client.check() for client in self.clients.values()))
        outcome = dict(zip(self.clients, results, strict=True))
        for provider, problem in outcome.items():
            if problem is None:
                await self._clear_failure(provider)
            else:
                await self._record_failure(None, provider, None,
                                           Verdict(FailureKind.CONNECTION, True, True), problem)
        return outcome

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        await self.store.close()


def flatten_attempts(errors: Iterable[BaseException]) -> list[Attempt]:
    """Attempts carried by the failures of a fallback chain (nested groups included)."""
    attempts: list[Attempt] = []
    for error in errors:
        if isinstance(error, ProviderFailure):
            attempts.extend(error.attempts)
        elif isinstance(error, BaseExceptionGroup):
            attempts.extend(flatten_attempts(error.exceptions))
    return attempts

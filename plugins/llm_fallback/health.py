"""The provider-health state machine: the only writer of cooldown, probe, preferred and forced state.

A provider (or one of its models) is healthy, cooling or half-open (`records.Health`); what is
stored is a `FailureRecord` per provider / model, shared by every process through the store.

    healthy ──failure──▶ cooling ──cooldown over──▶ half-open ──probe succeeds──▶ healthy
                            ▲                            │
                            └───── probe fails ──────────┘  (cooldown × ejections, capped)

- a failure while cooling is counted, and the cooldown's end stays where it is (requests that
  were in flight must not push the next probe back);
- only the first failure after what a request saw writes (compare-and-set on the record);
- a success deletes only the record the request saw (a newer failure stays);
- a half-open provider is tried by the one request holding its probe lease (`take_probe`);
- bad replies (empty, unusable) are strikes: `STRIKES_TO_COOL` in one cooldown window cool it.

Every transition is returned typed (`CooledDown`, `Recovered`), logged with the operator's log
markers and published as a `HealthEvent`. Times come from the injected clock: tests never sleep.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .events import EventBus, HealthEvent
from .records import (
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
from .stores import Clock, StateStore

logger = logging.getLogger("llm_fallback")

MAX_RETRY_AFTER = 3600.0
"""Upper bound for a provider's `Retry-After`."""
STRIKES_TO_COOL = 3
"""Bad replies (empty, or output the agent could not use) within one cooldown window that cool a provider."""


@dataclass(frozen=True)
class Lease:
    """A probe lease held by one request: the key and this holder's random token."""

    key: str
    token: str


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


class ProviderHealth:
    """The shared health of a fixed set of providers (see the module docstring)."""

    def __init__(self, store: StateStore, providers: Mapping[str, Sequence[str]], configured: Sequence[str], *,
                 events: EventBus, clock: Clock, failure_cooldown: float, max_cooldown: float,
                 preferred_ttl: float, lease_seconds: Mapping[str, float], redact: Callable[[str], str],
                 setting_hints: Mapping[str, str] | None = None):
        self.store = store
        self.configured = tuple(configured)
        self.events = events
        self.clock = clock
        self.failure_cooldown = failure_cooldown
        self.max_cooldown = max_cooldown
        self.preferred_ttl = preferred_ttl
        self._lease_seconds = dict(lease_seconds)
        self._redact = redact
        self._hints = dict(setting_hints or {})
        self._keys = StateKeys({name: tuple(models) for name, models in providers.items()})
        self._strikes: dict[str, deque[float]] = {}
        self._logged_preferred: str | None = None

    async def read(self) -> Snapshot:
        """The shared state now (one store round trip)."""
        return await self._keys.read(self.store, self.clock())

    async def last_errors(self, providers: Sequence[str]) -> dict[str, FailureRecord | None]:
        raws = await self.store.get_many([last_error_key(p) for p in providers])
        return {p: FailureRecord.parse(raw) for p, raw in zip(providers, raws, strict=True)}

    # -- probes

    async def take_probe(self, snapshot: Snapshot, provider: str, model: str | None = None) -> Lease | None:
        """The probe lease of a half-open provider (or model), if no other request holds it.

        The failure record is read again once the lease is ours: a probe that failed since our
        snapshot wrote a new cooldown before releasing its lease, and that cooldown wins.
        """
        lease = Lease(probe_key(provider, model), secrets.token_hex(8))
        if not await self.store.set(lease.key, lease.token, self._lease_seconds[provider], only_if_absent=True):
            return None
        seen = snapshot.failure(provider, model)
        (current,) = await self.store.get_many([cooldown_key(provider, model)])
        if seen is None or current != seen.raw:
            await self.release(lease)
            return None
        return lease

    async def release(self, lease: Lease | None) -> None:
        if lease is not None:
            await self.store.delete_if_equal(lease.key, lease.token)

    # -- outcomes

    async def succeeded(self, snapshot: Snapshot, provider: str, model: str) -> Recovered | None:
        """`provider/model` answered: end the failure episode this request saw, refresh `preferred`.

        Strikes stay: an answer the agent could not use arrives as a success, and is struck after."""
        transition = None
        seen = snapshot.failure(provider)
        # Clear the failure we saw; a newer one (another request failing since) stays.
        if seen is not None and await self.store.delete_if_equal(cooldown_key(provider), seen.raw):
            transition = await self._recovered(Recovered(provider, seen.kind, seen.error))
        seen_model = snapshot.failure(provider, model)
        if seen_model is not None:
            await self.store.delete_if_equal(cooldown_key(provider, model), seen_model.raw)
        await self._remember_preferred(snapshot, provider)
        return transition

    async def failed(self, snapshot: Snapshot | None, provider: str, kind: str, error: str, *,
                     model: str | None = None, retry_after: float | None = None) -> CooledDown | None:
        """Start (or grow) the cooldown of `provider`, or of only its `model` (a missing model).

        `snapshot`: what the failing request saw (None: read it now, e.g. a report from outside).
        Returns the transition when a cooldown started; None when it was already cooling.
        """
        now = self.clock()
        error = self._redact(error)
        key = cooldown_key(provider, model)
        if snapshot is not None:
            seen = snapshot.failure(provider, model)
        else:
            (raw,) = await self.store.get_many([key])
            seen = FailureRecord.parse(raw)
        started = seen is None or seen.until <= now
        if not started:
            assert seen is not None
            # Still cooling (a last resort, a forced provider, a request in flight): count it, keep the end.
            record = FailureRecord(seen.until, now, kind, error, seen.count + 1, seen.ejections)
        else:
            ejections = seen.ejections + 1 if seen is not None else 1
            record = FailureRecord(now + self._cooldown_for(ejections, retry_after), now, kind, error,
                                   (seen.count if seen else 0) + 1, ejections)
        ttl = max(record.until - now, 1.0) + FAILURE_MEMORY
        # Only the first failure after what this request saw writes: requests that were in flight
        # and fail later must not push the cooldown's end (and the next probe) back.
        if seen is None:
            recorded = await self.store.set(key, record.dump(), ttl, only_if_absent=True)
        else:
            recorded = await self.store.replace_if_equal(key, seen.raw, record.dump(), ttl)
        target = f"{provider}/{model}" if model else provider
        if not recorded:
            logger.debug("Provider %s failed too (already cooling down): %s", target, error)
            return None
        await self.store.set(last_error_key(provider), record.dump(), FAILURE_MEMORY)
        if not started:
            logger.info("Provider %s failed again while cooling down: %s", target, error)
            return None
        transition = CooledDown(provider, model, kind, error, record.until - now, record.ejections,
                                await self._has_working_fallback(provider))
        grown = f", ×{record.ejections}" if record.ejections > 1 else ""
        logger.warning("⚠️ Provider %s failed: %s (cooldown: %ds%s)", target, error, round(transition.cooldown), grown)
        if kind == "auth":
            logger.error("❌ Provider %s rejected our credentials: check %s", provider,
                         self._hints.get(provider, f"the API key of {provider}"))
        if model is None:
            await self.events.publish(HealthEvent("down", provider, error=error, cooldown=transition.cooldown,
                                                  has_working_fallback=transition.has_working_fallback))
        return transition

    def strike(self, provider: str) -> bool:
        """Count one unusable reply of `provider`; True once that makes `STRIKES_TO_COOL` in one
        cooldown window (the strikes then start over, and the caller records a failure)."""
        now = self.clock()
        strikes = self._strikes.setdefault(provider, deque())
        strikes.append(now)
        while strikes and strikes[0] < now - self.failure_cooldown:
            strikes.popleft()
        if len(strikes) < STRIKES_TO_COOL:
            logger.info("Provider %s gave an unusable reply: %d of %d before a cooldown", provider, len(strikes),
                        STRIKES_TO_COOL)
            return False
        strikes.clear()
        return True

    async def mark_healthy(self, provider: str, *, why: str | None = None) -> Recovered | None:
        """End any failure episode of `provider` whatever was seen (a check or an admin says it works)."""
        self._strikes.pop(provider, None)
        snapshot = await self.read()
        transition = None
        if await self.store.delete(cooldown_key(provider)):
            logger.warning("✅ Provider %s marked healthy%s", provider, f" [{why}]" if why else "")
            transition = Recovered(provider)
            await self.events.publish(HealthEvent("recovered", provider))
        await self._remember_preferred(snapshot, provider)
        return transition

    # -- the admin's choices

    async def force(self, provider: str, seconds: float) -> float:
        """Put `provider` first for `seconds` (limits are checked by the caller: `force.check`)."""
        until = self.clock() + seconds
        await self.store.set(FORCED, Choice(provider, until).dump(), seconds)
        logger.warning("🔧 Provider %s forced for %ds", provider, round(seconds))
        return until

    async def clear(self) -> Cleared:
        """Forget everything: preferred, force, cooldowns, probes, last errors (the whole namespace)."""
        snapshot = await self.read()
        cleared = Cleared(snapshot.preferred.provider if snapshot.preferred else None,
                          snapshot.forced.provider if snapshot.forced else None, snapshot.with_failures())
        await self.store.clear("*")
        self._strikes.clear()
        logger.warning("🔧 LLM provider cache cleared: %s", {"preferred": cleared.preferred, "forced": cleared.forced,
                                                             "cooldowns": cleared.cooldowns})
        return cleared

    # -- internals

    async def _recovered(self, transition: Recovered) -> Recovered:
        logger.warning("✅ Provider %s recovered after %s (%s)", transition.provider, transition.kind, transition.error)
        await self.events.publish(HealthEvent("recovered", transition.provider))
        return transition

    def _cooldown_for(self, ejections: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 1.0), MAX_RETRY_AFTER)
        return min(self.failure_cooldown * ejections, self.max_cooldown)

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

    async def _has_working_fallback(self, provider: str) -> bool:
        snapshot = await self.read()
        return any(p != provider and not snapshot.cooling(p) for p in self.configured)

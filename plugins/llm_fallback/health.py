"""The provider-health state machine: the only writer of cooldown, probe, preferred and forced state.

A provider (or one of its models) is healthy, cooling or half-open (`records.Health`); what is
stored is a `FailureRecord` per provider / model, shared by every process through the store
(the state diagram: docs/fallback.md, "The provider state machine").

- a failure while cooling is counted, and the cooldown's end stays where it is (requests that
  were in flight must not push the next probe back);
- only the first failure after what a request saw writes (compare-and-set on the record);
- a success deletes only the record the request saw (a newer failure stays); a stream's failure
  is ended only by a stream's success (`FailureRecord.streamed`);
- a half-open provider is tried by the one request holding its probe lease (`take_probe`);
  while background recovery probes cover it (`background.py`), no user request probes it;
- bad replies (empty, unusable) are strikes: `STRIKES_TO_COOL` in one cooldown window cool it.

Every transition is returned typed (`CooledDown`, `Recovered`), logged with the operator's log
markers and published as a `HealthEvent`. The numbers are `policy.py`'s; times the injected clock's.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence

from .budget import Budgets
from .events import EventBus, HealthEvent
from .policy import STRIKES_TO_COOL, Strikes, Timings, cooldown_seconds, next_probe_gap
from .records import (
    FAILURE_MEMORY,
    FORCED,
    PREFERRED,
    Choice,
    FailureRecord,
    Lease,
    ProbeSchedule,
    Readiness,
    Snapshot,
    StateKeys,
    checker_key,
    cooldown_key,
    last_error_key,
    last_ok_key,
    probe_key,
    ready_key,
    recovery_key,
)
from .stores import Clock, StateStore
from .transitions import Cleared, CooledDown, Recovered

logger = logging.getLogger("llm_fallback")

LAST_OK_REFRESH = 60.0
"""A provider's last success is written at most this often (status reads it as evidence)."""


class ProviderHealth:
    """The shared health of a fixed set of providers (see the module docstring)."""

    def __init__(self, store: StateStore, providers: Mapping[str, Sequence[str]], configured: Sequence[str], *,
                 events: EventBus, clock: Clock, timings: Timings, lease_seconds: Mapping[str, float],
                 redact: Callable[[str], str], setting_hints: Mapping[str, str] | None = None,
                 budgets: Budgets | None = None):
        self.store = store
        self.configured = tuple(configured)
        self.events = events
        self.clock = clock
        self.timings = timings
        self._lease_seconds = dict(lease_seconds)
        self._redact = redact
        self._hints = dict(setting_hints or {})
        grace = max(self._lease_seconds.values(), default=0.0) + timings.recovery_interval
        self._keys = StateKeys({name: tuple(models) for name, models in providers.items()}, probe_grace=grace,
                               budgets=budgets)
        self._strikes = Strikes(timings.failure_cooldown)
        self._logged_preferred: str | None = None

    @property
    def failure_cooldown(self) -> float:
        return self.timings.failure_cooldown

    async def read(self) -> Snapshot:
        """The shared state now (one store round trip)."""
        return await self._keys.read(self.store, self.clock())

    async def last_errors(self, providers: Sequence[str]) -> dict[str, FailureRecord | None]:
        raws = await self.store.get_many([last_error_key(p) for p in providers])
        return {p: FailureRecord.parse(raw) for p, raw in zip(providers, raws, strict=True)}

    async def readiness(self, providers: Sequence[str]) -> dict[str, Readiness | None]:
        raws = await self.store.get_many([ready_key(p) for p in providers])
        return {p: Readiness.parse(raw) for p, raw in zip(providers, raws, strict=True)}

    # -- leases

    async def take_probe(self, snapshot: Snapshot, provider: str, model: str | None = None) -> Lease | None:
        """The probe lease of a half-open provider (or model), if free. Read again once ours: a probe that
        failed since our snapshot wrote a new cooldown before releasing its lease, and that cooldown wins."""
        lease = await self._lease(probe_key(provider, model), self._lease_seconds[provider])
        if lease is None:
            return None
        seen = snapshot.failure(provider, model)
        (current,) = await self.store.get_many([cooldown_key(provider, model)])
        if seen is None or current != seen.raw:
            await self.release(lease)
            return None
        return lease

    async def take_checker(self, provider: str) -> Lease | None:
        """The lease of the one process that checks `provider` in the background now (expires if it dies)."""
        return await self._lease(checker_key(provider), self._lease_seconds[provider])

    async def release(self, lease: Lease | None) -> None:
        if lease is not None:
            await self.store.delete_if_equal(lease.key, lease.token)

    async def _lease(self, key: str, seconds: float) -> Lease | None:
        lease = Lease(key, secrets.token_hex(8))
        return lease if await self.store.set(key, lease.token, seconds, only_if_absent=True) else None

    # -- outcomes

    async def succeeded(self, snapshot: Snapshot, provider: str, model: str | None, *,
                        streamed: bool = True, served: bool = True) -> Recovered | None:
        """`provider/model` answered: end the failure this request saw (a newer one stays), refresh `preferred`.
        Strikes stay (an unusable answer arrives as a success, struck after); a stream's failure is ended only
        by a stream, an output failure only by a served request. `served`: False for a probe."""
        transition = None
        seen = snapshot.failure(provider)
        if seen is not None and (streamed or not seen.streamed) and (served or not seen.output) and \
                await self.store.delete_if_equal(cooldown_key(provider), seen.raw):
            transition = await self._recovered(Recovered(provider, seen.kind, seen.error))
        seen_model = snapshot.failure(provider, model) if model else None
        if seen_model is not None and await self.store.delete_if_equal(cooldown_key(provider, model), seen_model.raw) \
                and snapshot.no_model_left(provider, on_record=True):
            transition = await self._recovered(Recovered(provider, seen_model.kind, seen_model.error))
        await self.answered(snapshot, provider)
        if served:
            await self._remember_preferred(snapshot, provider)
        return transition

    async def refused(self, provider: str, kind: str, error: str) -> None:
        """`provider` refused this request as bad (no cooldown): the status shows why it was not used."""
        now = self.clock()
        record = FailureRecord(now, now, kind, self._redact(error), 1)
        await self.store.set(last_error_key(provider), record.dump(), FAILURE_MEMORY)

    async def answered(self, snapshot: Snapshot, provider: str) -> None:
        """`provider` answered over its API (a success, or a refusal of this request): it is up, not just unfailed."""
        last_ok = snapshot.last_ok.get(provider)
        if last_ok is None or snapshot.now - last_ok > LAST_OK_REFRESH:
            await self.store.set(last_ok_key(provider), str(self.clock()), FAILURE_MEMORY)

    async def failed(self, snapshot: Snapshot | None, provider: str, kind: str, error: str, *,
                     model: str | None = None, retry_after: float | None = None, streamed: bool = False,
                     output: bool = False) -> CooledDown | None:
        """Start (or grow) the cooldown of `provider`, or of only its `model` (a missing model); the transition
        when one started. `snapshot`: what the failing request saw (None: read it now, a report from outside)."""
        now = self.clock()
        error = self._redact(error)
        key = cooldown_key(provider, model)
        if snapshot is not None:
            seen = snapshot.failure(provider, model)
        else:
            (raw,) = await self.store.get_many([key])
            seen = FailureRecord.parse(raw)
        started = seen is None or seen.until <= now
        streamed = streamed or (seen is not None and seen.streamed)  # until a success ends the episode
        if not started:
            assert seen is not None
            # Still cooling (a last resort, a forced provider, a request in flight): count it, keep the end.
            record = FailureRecord(seen.until, now, kind, error, seen.count + 1, seen.ejections, streamed, output)
        else:
            ejections = seen.ejections + 1 if seen is not None else 1
            cooldown = cooldown_seconds(self.timings.failure_cooldown, ejections, self.timings.max_cooldown,
                                        retry_after)
            record = FailureRecord(now + cooldown, now, kind, error, (seen.count if seen else 0) + 1, ejections,
                                   streamed, output)
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
        if model is None and not output and self.timings.recovery_interval > 0 and not (
                snapshot is not None and snapshot.probed_in_background(provider)):
            await self._schedule_recovery(provider, ProbeSchedule(now + self.timings.recovery_interval, 0, now))
        fresh = await self.read()
        transition = CooledDown(provider, model, kind, error, record.until - now, record.ejections,
                                any(p != provider and not fresh.cooling(p) for p in self.configured))
        grown = f", ×{record.ejections}" if record.ejections > 1 else ""
        logger.warning("⚠️ Provider %s failed: %s (cooldown: %ds%s)", target, error, round(transition.cooldown), grown)
        if kind == "auth":
            logger.error("❌ Provider %s rejected our credentials: check %s", provider,
                         self._hints.get(provider, f"the API key of {provider}"))
        if model is None or fresh.no_model_left(provider):
            await self.events.publish(HealthEvent("down", provider, error=error, cooldown=transition.cooldown,
                                                  has_working_fallback=transition.has_working_fallback))
        return transition

    async def struck(self, snapshot: Snapshot | None, provider: str, kind: str, error: str, *,
                     streamed: bool = False) -> bool:
        """One unusable reply of `provider`; the `STRIKES_TO_COOL`-th in one cooldown window cools it
        (True; the strikes start over). That cooldown is about its replies (`FailureRecord.output`)."""
        count = self._strikes.add(provider, self.clock())
        if count < STRIKES_TO_COOL:
            logger.info("Provider %s gave an unusable reply: %d of %d before a cooldown", provider, count,
                        STRIKES_TO_COOL)
            return False
        await self.failed(snapshot, provider, kind, error, streamed=streamed, output=True)
        return True

    async def mark_healthy(self, provider: str, *, why: str | None = None) -> Recovered | None:
        """End any failure episode of `provider` whatever was seen (a check or an admin says it works)."""
        self._strikes.forget(provider)
        snapshot = await self.read()
        transition = None
        if await self.store.delete(cooldown_key(provider)):
            logger.warning("✅ Provider %s marked healthy%s", provider, f" [{why}]" if why else "")
            transition = Recovered(provider)
            await self.events.publish(HealthEvent("recovered", provider))
        await self.store.set(last_ok_key(provider), str(self.clock()), FAILURE_MEMORY)
        await self._remember_preferred(snapshot, provider)
        return transition

    # -- background checks (their schedule is shared: whichever process holds the lease probes)

    async def probe_failed(self, snapshot: Snapshot, provider: str, kind: str, error: str,
                           retry_after: float | None = None) -> None:
        """A background recovery probe of a cooling provider failed: it stays cooling; the next probe backs off."""
        await self.failed(snapshot, provider, kind, error + " [recovery probe]", retry_after=retry_after)
        schedule = snapshot.recoveries.get(provider)
        now = self.clock()
        since = schedule.since if schedule else now
        gap = next_probe_gap(self.timings.recovery_interval, now - since, self.timings.probe_bound)
        await self._schedule_recovery(provider, ProbeSchedule(now + gap, (schedule.failures if schedule else 0) + 1,
                                                              since))

    async def checked(self, provider: str, readiness: Readiness) -> Readiness | None:
        """Record a readiness check of a standby (it never cools the provider); returns the previous result."""
        (raw,) = await self.store.get_many([ready_key(provider)])
        await self.store.set(ready_key(provider), readiness.dump(), FAILURE_MEMORY)
        if readiness.ok:
            await self.store.set(last_ok_key(provider), str(readiness.at), FAILURE_MEMORY)
        return Readiness.parse(raw)

    async def _schedule_recovery(self, provider: str, schedule: ProbeSchedule) -> None:
        await self.store.set(recovery_key(provider), schedule.dump(), FAILURE_MEMORY)

    # -- the admin's choices

    async def force(self, provider: str, seconds: float) -> float:
        """Put `provider` first for `seconds` (limits are checked by the caller: `force.check_force`)."""
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
        self._strikes.forget()
        logger.warning("🔧 LLM provider cache cleared: %s", {"preferred": cleared.preferred, "forced": cleared.forced,
                                                             "cooldowns": cleared.cooldowns})
        return cleared

    # -- internals

    async def _recovered(self, transition: Recovered) -> Recovered:
        await self.store.delete(recovery_key(transition.provider))
        logger.warning("✅ Provider %s recovered after %s (%s)", transition.provider, transition.kind, transition.error)
        await self.events.publish(HealthEvent("recovered", transition.provider))
        return transition

    async def _remember_preferred(self, snapshot: Snapshot, provider: str) -> None:
        """Keep `preferred` pointing at the last provider that served, refreshing it lazily."""
        current = snapshot.preferred
        ttl = self.timings.preferred_ttl
        if current is not None and current.provider == provider and current.until - snapshot.now > ttl / 2:
            return
        await self.store.set(PREFERRED, Choice(provider, self.clock() + ttl).dump(), ttl)
        if provider != self._logged_preferred:  # a change, logged once (not once per request of a burst)
            self._logged_preferred = provider
            logger.info("✅ Provider %s healthy, cached as preferred", provider)

"""Background checks, one process per cluster: recovery probes of cooling providers, readiness of idle ones.

- **Recovery probes** (`recovery_interval` > 0): while a provider cools, the one process holding
  its checker lease asks it for one token on the shared schedule (`policy.next_probe_gap`). A
  success ends the cooldown for every process at once; a failure keeps it cooling. User
  requests never probe a provider that probes cover (`records.Snapshot.health`), so a dead
  primary sees only the probes. Without probes, the first request after the cooldown probes it.
- **Readiness checks** (`standby_interval` > 0): every configured provider that is not serving
  (the fallback on a good day) gets the same one-token check every interval, the first within
  `FIRST_CHECK_DELAY` of start-up. A failure is announced once (`HealthEvent("standby_failed")`)
  and shown in the status; it never cools the provider: the first user request still tries it.

Each process ticks every `tick` seconds; due work needs the provider's checker lease
(`SET NX PX`, expiring if the holder dies, so another process takes over) and is re-read once the
lease is held, so a check runs once per due time however many processes tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .checks import try_provider
from .events import EventBus, HealthEvent, ProbeEvent
from .health import ProviderHealth
from .providers import ProviderRegistry
from .records import Readiness, Snapshot
from .routing import Why, attempt_order
from .stores import STORE_ERRORS, Clock

logger = logging.getLogger("llm_fallback")

FIRST_CHECK_DELAY = 30.0
"""Seconds after start-up before the first readiness check (well within a minute)."""
CHECK_TIMEOUT = 10.0


class BackgroundChecks:
    def __init__(self, registry: ProviderRegistry, health: ProviderHealth, events: EventBus, *, clock: Clock,
                 recovery_interval: float, standby_interval: float, describe: Callable[[BaseException, str], str],
                 tick: float = 1.0, timeout: float = CHECK_TIMEOUT):
        self.registry = registry
        self.health = health
        self.events = events
        self.clock = clock
        self.recovery_interval = recovery_interval
        self.standby_interval = standby_interval
        self.describe = describe
        self.tick = min(tick, recovery_interval or tick)
        self.timeout = timeout
        self.started_at = clock()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.recovery_interval > 0 or self.standby_interval > 0

    def start(self) -> None:
        if self.enabled and self._task is None:
            self.started_at = self.clock()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="llm-background-checks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.run_once()
                failing = False
            except STORE_ERRORS as error:  # the store said so already; try again next tick
                logger.debug("background checks skipped a tick: %s", error)
            except Exception:  # noqa: BLE001 - a bug here must not stop the checks for good
                if not failing:
                    logger.exception("background checks failed; retrying every %.0fs", self.tick)
                failing = True
            await asyncio.sleep(self.tick)

    async def run_once(self) -> list[str]:
        """One tick: run whatever is due and ours to run; returns `purpose:provider` for each check made."""
        snapshot = await self.health.read()
        done = []
        for provider in self.registry.configured:
            purpose = self._due(snapshot, provider, await self._readiness(provider))
            if purpose is None:
                continue
            lease = await self.health.take_checker(provider)
            if lease is None:
                continue  # another process checks it now
            try:
                snapshot = await self.health.read()  # what the last holder wrote before letting go
                if self._due(snapshot, provider, await self._readiness(provider)) == purpose:
                    await (self._probe(snapshot, provider) if purpose == "recovery" else self._check(provider, snapshot))
                    done.append(f"{purpose}:{provider}")
            finally:
                await self.health.release(lease)
        return done

    async def _readiness(self, provider: str) -> Readiness | None:
        if self.standby_interval <= 0:
            return None
        return (await self.health.readiness([provider]))[provider]

    def _due(self, snapshot: Snapshot, provider: str, readiness: Readiness | None) -> str | None:
        now = snapshot.now
        record = snapshot.failure(provider)
        if record is not None:
            if self.recovery_interval <= 0 or record.output:  # replies nobody could use: a token proves nothing
                return None
            schedule = snapshot.recoveries.get(provider)
            due_at = schedule.next_at if schedule else record.at + self.recovery_interval
            return "recovery" if now >= due_at else None
        if self.standby_interval <= 0 or provider == self._serving(snapshot):
            return None
        due_at = readiness.next_at if readiness else self.started_at + min(FIRST_CHECK_DELAY, self.standby_interval)
        return "readiness" if now >= due_at else None

    def _serving(self, snapshot: Snapshot) -> str | None:
        order = attempt_order(snapshot, {p: self.registry.specs[p].models for p in self.registry.configured})
        return order[0].provider if order and order[0].why is not Why.LAST_RESORT else None

    async def _probe(self, snapshot: Snapshot, provider: str) -> None:
        record = snapshot.failure(provider)
        streamed = record is not None and record.streamed  # recovered only by a stream that ends well
        result = await try_provider(self.registry, provider, timeout=self.timeout, describe=self.describe,
                                    streamed=streamed)
        self.events.publish_soon(ProbeEvent(provider, "recovery", "ok" if result.ok else result.verdict.kind.value))
        if result.verdict is None:
            await self.health.succeeded(snapshot, provider, None, streamed=streamed, served=False)
        else:
            await self.health.probe_failed(snapshot, provider, result.verdict.kind.value, result.error or "",
                                           retry_after=result.verdict.retry_after)

    async def _check(self, provider: str, snapshot: Snapshot) -> None:
        result = await try_provider(self.registry, provider, timeout=self.timeout, describe=self.describe)
        now = self.clock()
        verdict = result.verdict
        readiness = Readiness(result.ok, now, now + self.standby_interval, verdict.kind.value if verdict else None,
                              result.error if verdict else None)
        self.events.publish_soon(ProbeEvent(provider, "readiness", "ok" if result.ok else readiness.kind or ""))
        previous = await self.health.checked(provider, readiness)
        if result.ok:
            logger.info("✅ Standby %s is ready (readiness check)", provider)
            if previous is not None and not previous.ok:
                await self.events.publish(HealthEvent("standby_ready", provider))
            return
        setting = self.registry.setting_hints.get(provider)
        logger.warning("⚠️ Standby %s can't answer: %s%s; it is not cooled down, but if %s fails now, users get "
                       "apologies", provider, result.error, f" (check {setting})" if setting else "",
                       self._serving(snapshot) or "the serving provider")
        if previous is None or previous.ok:
            await self.events.publish(HealthEvent("standby_failed", provider, error=result.error, setting=setting,
                                                  serving=self._serving(snapshot)))


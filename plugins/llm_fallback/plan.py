"""The plan for one request: hands out attempts in order and takes each outcome once.

`LLMProviderFallback.plan()` builds it from one read of the shared state and the order from
`routing.py`. `next_step()` takes a probe lease only for the half-open provider (or model) it
is about to hand out — never for one a healthier provider ahead of it will serve — and every
attempt reports back through `succeeded` / `failed` / `abandoned`, which record it in the engine.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import FailedAttempt, FailureKind, Verdict, classify
from .events import AttemptEvent, FallbackEvent
from .routing import Candidate, ModelStep, last_resort
from .state import Snapshot

if TYPE_CHECKING:
    from .engine import LLMProviderFallback

logger = logging.getLogger("llm_fallback")


@dataclass(frozen=True)
class Step:
    """One provider/model to try now, and the model's probe lease if it is a model probe."""

    candidate: Candidate
    model: ModelStep
    lease: tuple[str, str] | None = None
    """(key, token) of the model-level probe lease this attempt holds (a 404 cooldown that is over)."""

    @property
    def provider(self) -> str:
        return self.candidate.provider


class Plan:
    """The attempt order for one request; hands out steps and takes their outcomes (once each)."""

    def __init__(self, engine: LLMProviderFallback, snapshot: Snapshot, candidates: list[Candidate]):
        self.engine = engine
        self.snapshot = snapshot
        self.candidates = candidates
        self.failures: list[FailedAttempt] = []
        self._queue: deque[Candidate] = deque(candidates)
        self._models: deque[ModelStep] = deque()
        self._current: Candidate | None = None
        self._deferred: list[Candidate] = []
        self._failed_providers: list[str] = []
        self._provider_leases: dict[str, tuple[str, str]] = {}

    @property
    def order(self) -> list[str]:
        return [c.provider for c in self.candidates]

    def demote(self, provider: str) -> None:
        """Try `provider` only after every other (its last answer was unusable)."""
        if any(c.provider == provider for c in self._queue) and len(self._queue) > 1:
            kept = [c for c in self._queue if c.provider != provider]
            self._queue = deque(kept + [last_resort(provider, [m.name for m in self._find(provider).models])])

    def _find(self, provider: str) -> Candidate:
        return next(c for c in self.candidates if c.provider == provider)

    def peek_next_candidate(self) -> Candidate | None:
        """The next other provider a step would come from, without taking anything (for hedging)."""
        if self._queue:
            return self._queue[0]
        return self._deferred[0] if self._deferred else None

    def skip_current_provider(self) -> None:
        """The next step comes from the next provider (a hedge goes to another provider).

        The skipped provider's probe lease stays with its attempt still running."""
        self._models.clear()
        self._current = None

    async def next_step(self) -> Step | None:
        """The next provider/model to try, taking a probe lease if it needs one; None when exhausted."""
        while True:
            if self._current is not None and self._models:
                model = self._models.popleft()
                if not model.probe or self._current.reason in ("last_resort", "pinned", "forced"):
                    return Step(self._current, model)
                lease = await self.engine._take_probe(self.snapshot, self._current.provider, model.name)
                if lease is not None:
                    return Step(self._current, model, lease)
                continue  # another request probes this model; try the provider's next one
            if self._current is not None:
                await self.release_provider(self._current.provider)  # its models are exhausted
            self._current = None
            if not self._queue:
                if not self._deferred:
                    return None
                self._queue.extend(self._deferred)
                self._deferred = []
            candidate = self._queue.popleft()
            if candidate.provider in self._failed_providers:
                continue
            if candidate.probe:
                lease = await self.engine._take_probe(self.snapshot, candidate.provider)
                if lease is None:
                    # Another request probes it: try it last, as a last resort.
                    self._deferred.append(last_resort(candidate.provider, [m.name for m in candidate.models]))
                    continue
                self._provider_leases[candidate.provider] = lease
            self._current = candidate
            self._models = deque(candidate.models)

    async def release_provider(self, provider: str) -> None:
        """Give back the provider's probe lease, if this request holds it."""
        lease = self._provider_leases.pop(provider, None)
        if lease is not None:
            await self.engine.store.delete_if_equal(*lease)

    async def close(self) -> None:
        """The request is over: give back every lease it still holds."""
        for provider in list(self._provider_leases):
            await self.release_provider(provider)

    async def succeeded(self, step: Step, *, seconds: float, first_event: float | None, streamed: bool) -> None:
        await self.engine._record_success(self, step)
        self.engine._emit_now(AttemptEvent(step.provider, step.model.name, "ok", seconds, first_event, streamed))
        if self._failed_providers and step.provider != self._failed_providers[0]:
            logger.warning("⚠️ Primary provider failed, using fallback: %s", step.provider)
            self.engine._emit_now(FallbackEvent(self._failed_providers[0], step.provider))

    async def failed(self, step: Step, error: BaseException, *, seconds: float, first_event: float | None = None,
                     streamed: bool = False, lag_excused: bool = False) -> Verdict:
        """Classify and record one attempt's failure; returns what the request does next."""
        verdict = classify(error, streamed_first_event=first_event is not None and streamed)
        description = self.engine.describe(error)
        blamed = verdict.cool_down and not lag_excused
        if lag_excused and verdict.cool_down:
            logger.warning("⏱️ %s/%s timed out while this process's event loop lagged: falling back, no cooldown",
                           step.provider, step.model.name)
        if verdict.kind is FailureKind.EMPTY:
            blamed = await self.engine._strike(self, step, verdict, description)
        elif blamed:
            await self.engine._record_failure(self, step, verdict, description)
        else:
            await self.engine._release(self, step, provider_too=verdict.kind is not FailureKind.MODEL_MISSING)
        if verdict.fall_back or verdict.kind is FailureKind.STREAM_CUT:
            self.failures.append(FailedAttempt(step.provider, step.model.name, verdict.kind, description))
            if verdict.kind is not FailureKind.MODEL_MISSING and step.provider not in self._failed_providers:
                self._failed_providers.append(step.provider)
                self._models.clear()
        self.engine._emit_now(AttemptEvent(step.provider, step.model.name, verdict.kind.value, seconds, first_event,
                                           streamed, blamed))
        return verdict

    async def abandoned(self, step: Step, *, outcome: str, seconds: float, first_event: float | None = None,
                        streamed: bool = False, slow: bool = False) -> None:
        """The attempt ended without a verdict (the caller went away, or a hedged twin won).

        `slow`: it lost a hedge without producing anything (and this process's loop was not to
        blame). One such loss is not a failure; `SLOW_LOSSES_TO_COOL` in a row are a timeout.
        """
        blamed = await self.engine._slow_loss(self, step) if slow else False
        if not blamed:
            await self.engine._release(self, step, provider_too=True)
        self.engine._emit_now(AttemptEvent(step.provider, step.model.name, outcome, seconds, first_event, streamed,
                                           blamed))

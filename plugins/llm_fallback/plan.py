"""The plan for one request: hands out targets in order and applies each attempt's outcome once.

The engine builds it from one read of the shared state and the order from `routing.py`.
`next_target()` takes a probe lease only for the half-open provider (or model) it is about to
hand out, never for one a healthier provider ahead of it will serve. Every attempt reports back
exactly once (`succeeded` / `failed` / `abandoned`); what an error means was decided by
`errors.classify`, and the plan applies that `Verdict` to the provider's health (`health.py`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pydantic_ai.usage import RequestUsage

from .accounting import Accounting
from .errors import Blame, FailedAttempt, FailureKind, PromptTooLongError, Verdict, classify
from .events import AttemptEvent, ContextRefitEvent, EventBus, FallbackEvent
from .health import ProviderHealth
from .overflow import PromptTooLong
from .records import Lease, Snapshot
from .routing import Candidate, Why

logger = logging.getLogger("llm_fallback")

ANSWERED = frozenset({FailureKind.REQUEST, FailureKind.REFUSED, FailureKind.MODEL_MISSING, FailureKind.EMPTY})
"""Failures the provider's own API sent back: it is up (status says so), whatever it thought of the request."""


@dataclass(frozen=True)
class Target:
    """One provider/model to try now, with the model's probe lease if the model is half-open."""

    candidate: Candidate
    model: str
    lease: Lease | None = None

    @property
    def provider(self) -> str:
        return self.candidate.provider


@dataclass(frozen=True)
class Timing:
    """How one attempt went in time: start to end, and to its first event (None: there was none)."""

    seconds: float
    first_event: float | None
    streamed: bool


class Plan:
    """The attempt order for one request; hands out targets and takes their outcomes (once each)."""

    def __init__(self, health: ProviderHealth, events: EventBus, snapshot: Snapshot, candidates: list[Candidate],
                 *, models: Mapping[str, Sequence[str]], describe: Callable[[BaseException, str], str],
                 accounting: Accounting):
        self.health = health
        self.accounting = accounting
        self.events = events
        self.snapshot = snapshot
        self.candidates = candidates
        self.failures: list[FailedAttempt] = []
        self._all_models = models
        self._describe = describe
        self._queue: deque[Candidate] = deque(candidates)
        self._models: deque[str] = deque()
        self._current: Candidate | None = None
        self._deferred: list[Candidate] = []
        self._failed_providers: list[str] = []
        self._provider_leases: dict[str, Lease] = {}
        self._rejections: list[tuple[BaseException, str, str]] = []  # (error, provider, description)

    @property
    def order(self) -> list[str]:
        return [c.provider for c in self.candidates]

    # -- handing out targets

    async def next_target(self) -> Target | None:
        """The next provider/model to try, taking a probe lease if it needs one; None when exhausted."""
        while True:
            if self._current is not None and self._models:
                current, model = self._current, self._models.popleft()
                if model not in current.half_open_models or not current.why.probes_models:
                    return Target(current, model)
                lease = await self.health.take_probe(self.snapshot, current.provider, model)
                if lease is not None:
                    return Target(current, model, lease)
                continue  # another request probes this model; try the provider's next one
            if self._current is not None:
                await self._release_provider(self._current.provider)  # its models are exhausted
            self._current = None
            if not self._queue:
                if not self._deferred:
                    return None
                self._queue.extend(self._deferred)
                self._deferred = []
            candidate = self._queue.popleft()
            if candidate.provider in self._failed_providers:
                continue
            if candidate.why.needs_probe_lease:
                lease = await self.health.take_probe(self.snapshot, candidate.provider)
                if lease is None:  # another request probes it: try it last, as a last resort
                    self._deferred.append(candidate.as_last_resort(self._all_models[candidate.provider]))
                    continue
                self._provider_leases[candidate.provider] = lease
            self._current = candidate
            self._models = deque(candidate.models)

    def requests_own_error(self) -> BaseException | None:
        """When every provider tried refused the request itself, the error the caller gets instead of
        "all failed" (no outage, no alert): `PromptTooLongError` if it is too long for the windows of
        those that would take it, the first refusal if every provider gave one."""
        kinds = {f.kind for f in self.failures}
        if FailureKind.CONTEXT_WINDOW in kinds and kinds <= {FailureKind.CONTEXT_WINDOW, FailureKind.REQUEST}:
            error = PromptTooLongError(self.failures)
            logger.info("📏 %s", error)
            return error
        if self._rejections and kinds == {FailureKind.REQUEST}:
            return self._rejections[0][0]
        return None

    def avoid(self, providers: frozenset[str]) -> None:
        """Try `providers` only after every other (their streams of this reply broke off)."""
        for provider in providers:
            self._demote(provider)

    def _demote(self, provider: str) -> None:
        if any(c.provider == provider for c in self._queue) and len(self._queue) > 1:
            kept = [c for c in self._queue if c.provider != provider]
            self._queue = deque(kept + [Candidate(provider, tuple(self._all_models[provider]), Why.LAST_RESORT)])

    def peek_next(self) -> Candidate | None:
        """The next other provider a target would come from, without taking anything (for hedging)."""
        if self._queue:
            return self._queue[0]
        return self._deferred[0] if self._deferred else None

    def skip_current_provider(self) -> None:
        """The next target comes from the next provider (a hedge goes to another provider).

        The skipped provider's probe lease stays with its attempt still running."""
        self._models.clear()
        self._current = None

    async def rejected_output(self, provider: str) -> None:
        """The agent could not use `provider`'s last reply (it asks again): strike it, ask another first."""
        if provider not in self._all_models:
            return
        self._demote(provider)
        logger.info("Provider %s replied with output the agent could not use; asking another provider", provider)
        await self.health.struck(None, provider, FailureKind.MALFORMED.value, "replies the agent could not use")

    # -- outcomes

    async def succeeded(self, target: Target, timing: Timing, usage: RequestUsage | None = None) -> None:
        await self._release(target, provider_too=True)
        await self.health.succeeded(self.snapshot, target.provider, target.model, streamed=timing.streamed)
        await self.accounting.answered(target.provider, usage.total_tokens if usage else 0)
        for _, provider, description in self._rejections:  # another provider took what they refused: theirs
            await self.accounting.rejected(provider, FailureKind.REQUEST.value, description)
        self._publish(target, "ok", timing, blamed=False, usage=usage)
        if self._failed_providers and target.provider != self._failed_providers[0]:
            logger.warning("⚠️ Primary provider failed, using fallback: %s", target.provider)
            self.events.publish_soon(FallbackEvent(self._failed_providers[0], target.provider))

    async def failed(self, target: Target, error: BaseException, timing: Timing, *,
                     lag_excused: bool = False) -> Verdict:
        """Classify and apply one attempt's failure; returns what the request does next."""
        after_first_event = timing.streamed and timing.first_event is not None
        verdict = classify(error, after_first_event=after_first_event, lag_excused=lag_excused)
        description = self._describe(error, target.provider)
        if verdict.excused:
            logger.warning("⏱️ %s/%s timed out while this process's event loop lagged: falling back, no cooldown",
                           target.provider, target.model)
        blamed = await self._apply(target, verdict, description, error, streamed=timing.streamed)
        if verdict.fall_back or verdict.kind is FailureKind.STREAM_CUT:
            limit = error.limit_chars if isinstance(error, PromptTooLong) else None
            self.failures.append(FailedAttempt(target.provider, target.model, verdict.kind, description, limit))
            # a prompt too long for one model may fit the provider's next one: the provider has not failed
            if verdict.blame is not Blame.MODEL and verdict.kind is not FailureKind.CONTEXT_WINDOW \
                    and target.provider not in self._failed_providers:
                self._failed_providers.append(target.provider)
                self._models.clear()
        self._publish(target, verdict.kind.value, timing, blamed=blamed)
        return verdict

    def refitted(self, target: Target, window: int | None, dropped: int) -> None:
        """`target` refused the prompt as longer than its window: it gets it again, `dropped` oldest turns fewer."""
        said = f"{window} tokens, it says" if window is not None else "it did not say how large"
        logger.info("📏 %s/%s refused the prompt as longer than its context window (%s): sending it again without "
                    "the %d oldest turns; set its window to fit before sending", target.provider, target.model, said,
                    dropped)
        self.events.publish_soon(ContextRefitEvent(target.provider, target.model, window, dropped))

    async def abandoned(self, target: Target, outcome: str, timing: Timing, *, timed_out: str | None = None) -> None:
        """The attempt ended without a verdict: the caller went away, or a hedged twin won.

        `timed_out`: the provider is to blame after all (it kept losing hedges without a first
        event; `hedging.py` decides), recorded as a timeout with this description.
        """
        if timed_out is not None:
            await self.health.failed(self.snapshot, target.provider, FailureKind.TIMEOUT.value, timed_out,
                                     streamed=timing.streamed)
        elif timing.first_event is not None:
            await self.health.answered(self.snapshot, target.provider)
        await self._release(target, provider_too=True)
        self._publish(target, outcome, timing, blamed=timed_out is not None)

    async def close(self) -> None:
        """The request is over: give back every lease it still holds."""
        for provider in list(self._provider_leases):
            await self._release_provider(provider)

    # -- internals

    async def _apply(self, target: Target, verdict: Verdict, description: str, error: BaseException, *,
                     streamed: bool) -> bool:
        """What the verdict costs the provider; True when it was blamed (a cooldown or a strike out).

        A new cooldown is written before the probe lease is given back: the next lease holder
        then reads it, and does not probe again (`ProviderHealth.take_probe`)."""
        blame = verdict.blame
        if verdict.kind in ANSWERED:
            await self.health.answered(self.snapshot, target.provider)
        if verdict.kind is FailureKind.REQUEST:
            self._rejections.append((error, target.provider, description))  # told when another answers
            await self.health.refused(target.provider, verdict.kind.value, description)
        if blame is Blame.STRIKE:
            blamed = await self.health.struck(self.snapshot, target.provider, verdict.kind.value, description,
                                              streamed=streamed)
        elif blame is not Blame.NONE:
            await self.health.failed(self.snapshot, target.provider, verdict.kind.value, description,
                                     model=target.model if blame is Blame.MODEL else None,
                                     retry_after=verdict.retry_after, streamed=streamed)
        await self._release(target, provider_too=blame is not Blame.MODEL)
        return blamed if blame is Blame.STRIKE else blame is not Blame.NONE

    async def _release(self, target: Target, *, provider_too: bool) -> None:
        await self.health.release(target.lease)
        if provider_too:
            await self._release_provider(target.provider)

    async def _release_provider(self, provider: str) -> None:
        await self.health.release(self._provider_leases.pop(provider, None))

    def _publish(self, target: Target, outcome: str, timing: Timing, *, blamed: bool,
                 usage: RequestUsage | None = None) -> None:
        self.events.publish_soon(AttemptEvent(target.provider, target.model, outcome, timing.seconds,
                                              timing.first_event, timing.streamed, blamed,
                                              usage.input_tokens if usage else 0, usage.output_tokens if usage else 0))


def log_choice(plan: Plan, primary: str) -> None:
    """The operator's log markers for a request's first choice (debug, but for the unusual ones)."""
    if not plan.candidates:
        return
    first = plan.candidates[0]
    snapshot = plan.snapshot
    preferred = snapshot.preferred.provider if snapshot.preferred else None
    if first.why is Why.LAST_RESORT:
        logger.warning("⚠️ Every provider is cooling down; trying all of them anyway: %s", " → ".join(plan.order))
    elif first.why is Why.HALF_OPEN:
        logger.info("🔎 Cooldown of %s is over; the next request to reach it probes it", first.provider)
    elif preferred and preferred != first.provider and snapshot.cooling(preferred):
        logger.debug("⚠️ Cached provider %s is unhealthy, finding alternative...", preferred)
    elif preferred == first.provider:
        logger.debug("✅ Using cached provider: %s", first.provider)
    elif first.provider == primary:
        logger.debug("✅ Using primary provider: %s", first.provider)

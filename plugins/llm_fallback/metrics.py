"""Prometheus metrics of the fallback engine (needs the optional `prometheus-client`).

`FallbackMetrics(fallback, registry)` registers itself as an engine listener and counts what
the engine reports (`events.py`); `await metrics.refresh()` reads the shared provider state
(`status()`) into the gauges: call it right before each scrape. Every metric lives
in the `CollectorRegistry` you pass (one per app), never in prometheus-client's global one.

| metric | labels | from |
|---|---|---|
| `llm_attempts_total` | provider, model, outcome | `AttemptEvent` |
| `llm_attempt_seconds` (histogram) | provider, phase=`first_event`/`total` | `AttemptEvent` |
| `llm_failovers_total` | from_provider, to_provider | `FallbackEvent` |
| `llm_hedges_total` | provider (the slow one) | `HedgeEvent` |
| `llm_context_refits_total` | provider | `ContextRefitEvent` (a prompt sent again with fewer turns) |
| `llm_all_failed_total` | — | `HealthEvent("all_failed")` |
| `llm_provider_state` | provider, state=`healthy`/`unknown`/`cooling`/`half_open`/`forced` | `refresh()` |
| `llm_cooldown_seconds_remaining` | provider | `refresh()` |
| `llm_recovery_probes_total` | provider, outcome (`ok` or a failure kind) | `ProbeEvent("recovery")` |
| `llm_tokens_total` | provider, kind (`input`/`output`) | `AttemptEvent` (the usage answers report) |
| `llm_budget_remaining` | provider (with a token budget): tokens left this period | `refresh()` |
| `llm_standby_ready` | provider: 1 ready, 0 failed its last readiness check, -1 not checked | `refresh()` |

`forced` is set beside the provider's health state (a forced provider may be cooling too).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .engine import LLMProviderFallback
from .events import AttemptEvent, ContextRefitEvent, Event, FallbackEvent, HealthEvent, HedgeEvent, ProbeEvent

STATES = ("healthy", "unknown", "cooling", "half_open", "budget", "forced")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)


class FallbackMetrics:
    """The engine's counters, histograms and state gauges in one registry."""

    def __init__(self, fallback: LLMProviderFallback, registry: CollectorRegistry | None = None):
        self.fallback = fallback
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.attempts = Counter("llm_attempts", "LLM attempts by provider, model and outcome "
                                "(ok, a failure kind, cancelled, hedge_lost)",
                                ["provider", "model", "outcome"], registry=r)
        self.attempt_seconds = Histogram("llm_attempt_seconds", "LLM attempt latency: to the first event "
                                         "(phase=first_event) and to the end (phase=total)",
                                         ["provider", "phase"], buckets=LATENCY_BUCKETS, registry=r)
        self.fallbacks = Counter("llm_failovers", "Requests one provider could not serve and another did",
                                 ["from_provider", "to_provider"], registry=r)
        self.hedges = Counter("llm_hedges", "Hedges fired: the provider had no first event within the delay",
                              ["provider"], registry=r)
        self.context_refits = Counter("llm_context_refits", "Prompts a provider refused as longer than its context "
                                      "window, sent to it again with fewer of the oldest turns",
                                      ["provider"], registry=r)
        self.all_failed = Counter("llm_all_failed", "Requests that no provider could answer", registry=r)
        self.provider_state = Gauge("llm_provider_state", "1 for each state a provider is in now",
                                    ["provider", "state"], registry=r)
        self.cooldown_left = Gauge("llm_cooldown_seconds_remaining", "Seconds until a provider's cooldown ends",
                                   ["provider"], registry=r)
        self.recovery_probes = Counter("llm_recovery_probes", "Background recovery probes of cooling providers, "
                                       "by outcome (ok or a failure kind)", ["provider", "outcome"], registry=r)
        self.tokens = Counter("llm_tokens", "Tokens the providers' answers reported, by kind (input, output)",
                              ["provider", "kind"], registry=r)
        self.budget_remaining = Gauge("llm_budget_remaining", "Tokens a provider with a budget may still spend "
                                      "this period", ["provider"], registry=r)
        self.standby_ready = Gauge("llm_standby_ready", "1: the provider passed its last readiness check as a "
                                   "standby; 0: it failed it; -1: not checked", ["provider"], registry=r)
        for provider in fallback.order:  # every series exists from the first scrape
            self.standby_ready.labels(provider).set(-1)
            self.cooldown_left.labels(provider)
            self.context_refits.labels(provider)
            for state in STATES:
                self.provider_state.labels(provider, state)
        self.all_failed.inc(0)
        fallback.add_listener(self)

    def __call__(self, event: Event) -> None:
        match event:
            case AttemptEvent():
                self.attempts.labels(event.provider, event.model, event.outcome).inc()
                if event.input_tokens or event.output_tokens:
                    self.tokens.labels(event.provider, "input").inc(event.input_tokens)
                    self.tokens.labels(event.provider, "output").inc(event.output_tokens)
                self.attempt_seconds.labels(event.provider, "total").observe(event.seconds)
                if event.first_event_seconds is not None:
                    self.attempt_seconds.labels(event.provider, "first_event").observe(event.first_event_seconds)
            case FallbackEvent():
                self.fallbacks.labels(event.from_provider, event.to_provider).inc()
            case HedgeEvent():
                self.hedges.labels(event.provider).inc()
            case ContextRefitEvent():
                self.context_refits.labels(event.provider).inc()
            case HealthEvent(kind="all_failed"):
                self.all_failed.inc()
            case ProbeEvent(purpose="recovery"):
                self.recovery_probes.labels(event.provider, event.outcome).inc()

    async def refresh(self) -> None:
        """Read the shared state (one store round trip) into `llm_provider_state` and the cooldown gauge."""
        status = await self.fallback.status()
        for provider in status.providers:
            for state in STATES:
                on = provider.name == status.forced_provider if state == "forced" else provider.state == state
                self.provider_state.labels(provider.name, state).set(1 if on else 0)
            self.cooldown_left.labels(provider.name).set(provider.cooldown_seconds_left)
            self.standby_ready.labels(provider.name).set(-1 if provider.ready is None else int(provider.ready))
            if provider.budget is not None:
                self.budget_remaining.labels(provider.name).set(max(0, provider.budget - (provider.spent or 0)))

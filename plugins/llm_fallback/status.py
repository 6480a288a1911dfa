"""The status dict (`get_provider_stats()`): the seed's keys, plus what an operator needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .state import FailureRecord, Snapshot

if TYPE_CHECKING:
    from .engine import LLMProviderFallback


def provider_stats(engine: LLMProviderFallback, snapshot: Snapshot, last_errors: dict[str, str | None]) -> dict[str, Any]:
    now = snapshot.now
    health: dict[str, Any] = {}
    for provider in engine.order:
        spec = engine.specs[provider]
        record = snapshot.failure(provider)
        last = FailureRecord.parse(last_errors.get(provider))
        cooling = snapshot.cooling(provider)
        state = ("not_configured" if not spec.configured else "cooling" if cooling
                 else "half_open" if record else "healthy")
        health[provider] = {
            "healthy": spec.configured and record is None,
            "configured": spec.configured,
            "available": spec.configured and not cooling,
            "state": state,
            "cooldown_seconds_left": round(record.until - now) if record and cooling else 0,
            "cooldown_multiplier": record.ejections if record else 0,
            "failures": record.count if record else 0,
            "last_error": last.error if last else None,
            "last_error_kind": last.kind if last else None,
            "last_error_seconds_ago": round(now - last.at) if last else None,
            "models": list(spec.models),
            "unavailable_models": [m for m in spec.models if snapshot.cooling(provider, m)],
            "hedges_last_hour": engine.hedges_last_hour(provider),
        }
    forced = snapshot.forced
    return {
        "primary_provider": engine.primary,
        "fallback_provider": engine.order[1] if len(engine.order) > 1 else None,
        "provider_order": engine.order,
        "preferred_provider": snapshot.preferred.provider if snapshot.preferred else None,
        "forced_provider": forced.provider if forced else None,
        "forced_seconds_left": round(forced.until - now) if forced else None,
        "store": engine.store.kind,
        "hedging": engine.hedge.enabled,
        "provider_health": health,
    }

"""How the fallback engine treats providers over time: cooldowns, what it remembers, hedging, admission.

New settings of the fallback engine (recovery probes, standby checks, budgets) go here; settings
that describe a provider itself (address, key, models, timeouts, context windows) go in
`providers.py`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator


class FallbackSettings(BaseModel):
    LLM_PREFERRED_TTL: int = Field(1800, gt=0)
    LLM_FAILURE_COOLDOWN: int = Field(300, gt=0)
    LLM_MAX_COOLDOWN: int = Field(3600, gt=0)
    LLM_HEDGE_DELAY: str | None = None
    # LLM requests in flight per process (0 = no bound); queueing for a slot never counts against provider
    # timeouts, so a busy process does not blame providers for its own lag.
    LLM_MAX_CONCURRENT_REQUESTS: int = Field(64, ge=0)
    # Seconds between background recovery probes of a cooling provider (one 1-token completion each, one
    # process per cluster; 0 = off: the first request after the cooldown probes it). See docs/performance.md.
    LLM_RECOVERY_PROBE_INTERVAL: float = Field(5.0, ge=0)
    # Seconds between readiness checks of each provider that is not serving (a standby), 0 = off.
    LLM_STANDBY_CHECK_INTERVAL: float = Field(3600.0, ge=0)

    @field_validator("LLM_HEDGE_DELAY")
    @classmethod
    def _hedge_delay(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from plugins.llm_fallback import HedgePolicy  # loads the engine: only when the setting is used

        HedgePolicy.from_setting(value)  # raises ValueError naming the setting
        return value.strip().lower()

    @model_validator(mode="after")
    def _cooldown_cap(self) -> FallbackSettings:
        if self.LLM_MAX_COOLDOWN < self.LLM_FAILURE_COOLDOWN:
            raise ValueError("LLM_MAX_COOLDOWN must be at least LLM_FAILURE_COOLDOWN")
        return self

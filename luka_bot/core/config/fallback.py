"""How the fallback engine treats providers over time: cooldowns, what it remembers, hedging, admission.

New settings of the fallback engine (recovery probes, standby checks, budgets) go here; settings
that describe a provider itself (address, key, models, timeouts, context windows) go in
`providers.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from luka_bot.core.config.values import json_value

if TYPE_CHECKING:
    from plugins.llm_fallback.budget import Budgets


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
    # Tokens a (paid) provider may spend per period, as JSON: {"openai": 2000000}. A provider not named has none.
    LLM_TOKEN_BUDGETS: Annotated[dict[str, int], NoDecode] = {}
    LLM_BUDGET_PERIOD: Literal["day", "month"] = "day"
    # The time zone whose midnight starts a new period (IANA name).
    LLM_BUDGET_TIMEZONE: str = "UTC"

    @field_validator("LLM_TOKEN_BUDGETS", mode="before")
    @classmethod
    def _budgets_json(cls, value: Any) -> Any:  # not `_json`: ProviderSettings' validator of that name would hide it
        return json_value(value)

    @field_validator("LLM_TOKEN_BUDGETS")
    @classmethod
    def _positive_budgets(cls, value: dict[str, int]) -> dict[str, int]:
        for provider, tokens in value.items():
            if tokens <= 0:
                raise ValueError(f"the budget of {provider!r} must be a positive number of tokens, not {tokens}")
        return value

    @field_validator("LLM_BUDGET_PERIOD", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("LLM_BUDGET_TIMEZONE")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as UTC or Europe/Berlin") from None
        return value.strip()

    def budgets(self) -> Budgets:
        """The token budgets as the fallback engine takes them."""
        from plugins.llm_fallback.budget import Budgets, Period

        return Budgets(dict(self.LLM_TOKEN_BUDGETS), Period(self.LLM_BUDGET_PERIOD), ZoneInfo(self.LLM_BUDGET_TIMEZONE))

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

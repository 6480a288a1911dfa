"""LLM provider fallback for aiogram bots, on pydantic-ai.

- `LLMProviderFallback` (engine.py): builds the pieces and keeps the seed's management API;
  what fails over: `errors.classify`; provider state and its only writer: `records.py`, `health.py`;
  who is tried next: `routing.py`, handed out per request by `plan.Plan`;
- `LLMFallbackModel` (model.py): the pydantic-ai model that falls back per request, one
  `ProviderAttempt` (attempt.py) per provider/model tried, hedged by `hedging.Hedging` if asked;
- stores (stores/): Redis (shared, one bounded pool, Sentinel) and memory;
- `setup_llm_fallback(dp, fallback, admin_ids=…)` (setup.py): middleware, admin commands, alerts.
"""

from .attempt import answered_by
from .engine import LLMProviderFallback
from .errors import (
    AllProvidersFailedError,
    FailedAttempt,
    FailureKind,
    PromptTooLongError,
    StreamCutError,
    classify,
)
from .events import AttemptEvent, ContextRefitEvent, Event, FallbackEvent, HealthEvent, HedgeEvent, ProbeEvent
from .factory import ModelFactory
from .fit import fit_history
from .force import DEFAULT_FORCE_SECONDS, MAX_FORCE_SECONDS, MIN_FORCE_SECONDS, ForceError, check_force, parse_force
from .hedging import HedgePolicy
from .loop_lag import LoopLagMonitor
from .model import LLMFallbackModel, avoiding
from .providers import OLLAMA_CONTEXT_WINDOW, OPENAI_DEFAULT_URL, ProviderSpec, ollama_api_url
from .redaction import redact
from .setup import set_bot_commands, setup_llm_fallback
from .status import FallbackStatus, ProviderState, ProviderStatus
from .stores import (
    MemoryStateStore,
    PendingWrite,
    RedisOptions,
    RedisStateStore,
    RedisWithLocalFallback,
    SharedRedis,
    StateStore,
    connect_redis,
)

__all__ = [
    "DEFAULT_FORCE_SECONDS",
    "MAX_FORCE_SECONDS",
    "MIN_FORCE_SECONDS",
    "OLLAMA_CONTEXT_WINDOW",
    "OPENAI_DEFAULT_URL",
    "AllProvidersFailedError",
    "AttemptEvent",
    "ContextRefitEvent",
    "Event",
    "FailedAttempt",
    "FailureKind",
    "FallbackEvent",
    "FallbackStatus",
    "ForceError",
    "HealthEvent",
    "HedgeEvent",
    "HedgePolicy",
    "LLMFallbackModel",
    "LLMProviderFallback",
    "LoopLagMonitor",
    "MemoryStateStore",
    "ModelFactory",
    "PendingWrite",
    "ProbeEvent",
    "ProviderSpec",
    "ProviderState",
    "PromptTooLongError",
    "ProviderStatus",
    "RedisOptions",
    "RedisStateStore",
    "RedisWithLocalFallback",
    "SharedRedis",
    "StateStore",
    "StreamCutError",
    "answered_by",
    "avoiding",
    "check_force",
    "classify",
    "connect_redis",
    "fit_history",
    "ollama_api_url",
    "parse_force",
    "redact",
    "set_bot_commands",
    "setup_llm_fallback",
]

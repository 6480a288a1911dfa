"""LLM provider fallback for aiogram bots, on pydantic-ai.

- `LLMProviderFallback` (engine.py): providers, shared health, force/clear, status;
  which provider next: routing.py; what is stored under which key: state.py;
- `LLMFallbackModel` (model.py): the pydantic-ai model that falls back per request, one
  `ProviderAttempt` (attempt.py) per provider/model tried;
- stores (stores/): Redis (shared, one bounded pool, Sentinel) and memory;
- `setup_llm_fallback(dp, fallback, admin_ids=…)` (setup.py): middleware, admin commands, alerts.
"""

from .attempt import answered_by
from .engine import LLMProviderFallback
from .errors import AllProvidersFailedError, FailedAttempt, FailureKind, StreamCutError, classify, redact
from .events import AttemptEvent, Event, FallbackEvent, HealthEvent, HedgeEvent
from .factory import ModelFactory
from .hedging import HedgePolicy
from .loop_lag import LoopLagMonitor
from .model import LLMFallbackModel
from .providers import OPENAI_DEFAULT_URL, ProviderSpec, ollama_api_url
from .setup import set_bot_commands, setup_llm_fallback
from .stores import (
    MemoryStateStore,
    PendingWrite,
    RedisOptions,
    RedisStateStore,
    RedisWithLocalFallback,
    SharedRedis,
    StateStore,
    build_store,
    connect_redis,
)

__all__ = [
    "OPENAI_DEFAULT_URL",
    "AllProvidersFailedError",
    "AttemptEvent",
    "Event",
    "FailedAttempt",
    "FailureKind",
    "FallbackEvent",
    "HealthEvent",
    "HedgeEvent",
    "HedgePolicy",
    "LLMFallbackModel",
    "LLMProviderFallback",
    "LoopLagMonitor",
    "MemoryStateStore",
    "ModelFactory",
    "PendingWrite",
    "ProviderSpec",
    "RedisOptions",
    "RedisStateStore",
    "RedisWithLocalFallback",
    "SharedRedis",
    "StateStore",
    "StreamCutError",
    "answered_by",
    "build_store",
    "classify",
    "connect_redis",
    "ollama_api_url",
    "redact",
    "set_bot_commands",
    "setup_llm_fallback",
]

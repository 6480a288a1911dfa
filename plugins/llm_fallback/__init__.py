"""LLM provider failover for aiogram bots, on pydantic-ai.

- `LLMProviderFallback` (engine.py): order, health, force/clear, status — shared via a store;
- `FailoverModel` (model.py): the pydantic-ai model that fails over per request;
- stores (stores.py): Redis (shared) and memory;
- `setup_llm_fallback(dp, fallback, admin_ids=…)` (setup.py): middleware, admin commands, alerts.
"""

from .engine import LLMProviderFallback
from .events import AttemptEvent, Event, FailoverEvent, HealthEvent, HedgeEvent
from .errors import AllProvidersFailedError, Attempt, FailureKind, StreamCutError, classify, redact
from .factory import ModelFactory
from .model import FailoverModel
from .providers import ProviderSpec, ollama_api_url
from .setup import set_bot_commands, setup_llm_fallback
from .stores import FailsafeStore, MemoryStateStore, RedisStateStore, StateStore, build_store

__all__ = [
    "AllProvidersFailedError",
    "Attempt",
    "FailoverModel",
    "FailsafeStore",
    "FailureKind",
    "HealthEvent",
    "LLMProviderFallback",
    "MemoryStateStore",
    "ModelFactory",
    "ProviderSpec",
    "RedisStateStore",
    "StateStore",
    "StreamCutError",
    "build_store",
    "classify",
    "ollama_api_url",
    "redact",
    "set_bot_commands",
    "setup_llm_fallback",
]

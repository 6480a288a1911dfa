"""The bot's settings, read from the environment and `.env` (pydantic-settings).

Provider priority is the key order of `AVAILABLE_PROVIDERS` (first key = primary), as the seed
has it; it can be overridden from the environment as JSON, e.g.
`AVAILABLE_PROVIDERS='{"openai": ["gpt-4-turbo"], "ollama": ["llama3.2"]}'`.

`load_settings()` turns any invalid value into one `ConfigError` naming the setting;
`settings` (module attribute, loaded on first use) is the process-wide instance.
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

if TYPE_CHECKING:  # the provider clients (pydantic-ai, openai) load only when specs are built
    from plugins.llm_fallback import ProviderSpec

# Provider order: 1st key = primary, 2nd = fallback (dicts keep insertion order).
AVAILABLE_PROVIDERS: dict[str, list[str]] = {
    "ollama": ["gpt-oss", "llama3.2"],  # 1st key = Primary
    "openai": ["gpt-5", "gpt-4-turbo"],  # 2nd key = Fallback
}
BUILTIN_PROVIDERS = ("ollama", "openai")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
BOT_TOKEN_SHAPE = re.compile(r"\d+:[A-Za-z0-9_-]+")
"""What @BotFather hands out: `<bot id>:<secret>`."""


class ExtraProvider(BaseModel):
    """Another OpenAI-compatible endpoint, declared in `LLM_EXTRA_PROVIDERS`."""

    base_url: str
    api_key: SecretStr | None = None
    timeout: float = Field(60.0, gt=0)


class ConfigError(ValueError):
    """Invalid configuration: the message names the setting; start-up stops."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Telegram
    BOT_TOKEN: SecretStr | None = None
    ADMIN_IDS: Annotated[list[int], NoDecode] = []
    TELEGRAM_API_URL: str | None = None
    DEFAULT_LANGUAGE: str = "en"
    # Webhook mode (unset WEBHOOK_URL: long polling)
    WEBHOOK_URL: str | None = None
    WEBHOOK_PATH: str = "/webhook"
    WEBHOOK_HOST: str = "0.0.0.0"
    WEBHOOK_PORT: int = Field(8080, gt=0, lt=65536)
    WEBHOOK_SECRET: SecretStr | None = None
    LOG_LEVEL: str = "INFO"
    # Prometheus /metrics (needs the `metrics` extra; unset METRICS_PORT: no metrics)
    METRICS_PORT: int | None = Field(None, gt=0, lt=65536)
    METRICS_HOST: str = "0.0.0.0"

    # Shared state (Redis; unset: process memory)
    REDIS_URL: str | None = None
    REDIS_SENTINELS: Annotated[list[tuple[str, int]], NoDecode] = []
    REDIS_SENTINEL_MASTER: str | None = None
    REDIS_PREFIX: str | None = None  # fallback state; default llm:<bot id>:
    REDIS_BOT_PREFIX: str | None = None  # conversations; default luka:<bot id>:
    REDIS_MAX_CONNECTIONS: int = Field(20, ge=1, le=10_000)
    REDIS_POOL_TIMEOUT: float = Field(5.0, gt=0)
    REDIS_SOCKET_TIMEOUT: float = Field(0.5, gt=0)
    REDIS_RETRY_INTERVAL: float = Field(5.0, gt=0)

    # Ollama
    OLLAMA_URL: str = "http://localhost:11434"
    OLLAMA_MODEL_NAME: str | None = None
    OLLAMA_TIMEOUT: float = Field(60.0, gt=0)

    # OpenAI (or an OpenAI-compatible API)
    OPENAI_API_KEY: SecretStr | None = None
    OPENAI_MODEL_NAME: str | None = None
    OPENAI_TIMEOUT: float = Field(60.0, gt=0)
    OPENAI_BASE_URL: str | None = None

    # Fallback
    AVAILABLE_PROVIDERS: dict[str, list[str]] = Field(default_factory=lambda: dict(AVAILABLE_PROVIDERS))
    LLM_EXTRA_PROVIDERS: dict[str, ExtraProvider] = {}
    LLM_CONNECT_TIMEOUT: float = Field(3.0, gt=0)
    LLM_PREFERRED_TTL: int = Field(1800, gt=0)
    LLM_FAILURE_COOLDOWN: int = Field(300, gt=0)
    LLM_MAX_COOLDOWN: int = Field(3600, gt=0)
    LLM_HEDGE_DELAY: str | None = None

    # --- Admission control (see docs/performance.md, "Load burst"); 0 = no bound ---
    # Updates handled at once (polling: aiogram's tasks_concurrency_limit; webhook: a semaphore).
    BOT_MAX_CONCURRENT_UPDATES: int = Field(64, ge=0)
    # LLM requests in flight per process; queueing for a slot never counts against provider timeouts.
    LLM_MAX_CONCURRENT_REQUESTS: int = Field(64, ge=0)
    # --- end of admission control ---

    # --- Telegram's flood limits: one send budget per bot (docs/operations.md, "Flood control") ---
    TELEGRAM_SENDS_PER_SECOND: float = Field(30.0, gt=0, le=1000)  # the whole bot, every chat
    TELEGRAM_SENDS_BURST: int = Field(20, ge=1, le=1000)  # below ~30: slack for requests that arrive early
    TELEGRAM_CHAT_SENDS_PER_SECOND: float = Field(1.0, gt=0, le=100)  # one chat
    TELEGRAM_CHAT_BURST: int = Field(3, ge=1, le=100)
    TELEGRAM_GROUP_SENDS_PER_MINUTE: float = Field(20.0, gt=0, le=6000)  # one group, on top of the chat's rate
    TELEGRAM_SEND_DEADLINE: float = Field(300.0, ge=1, le=86400)  # an answer is retried after 429s this long

    # Conversations
    HISTORY_MAX_MESSAGES: int = Field(20, ge=2, le=200)
    HISTORY_TTL: int = Field(7 * 24 * 3600, gt=0)

    # --- Streamed replies (issue 8 §1) ---
    # on: private replies stream into a draft (sendMessageDraft; edits of one message where drafts are refused);
    # off: "typing…", then one final message.
    STREAMING: Literal["on", "off"] = "on"
    # Seconds between two frames of a reply's draft (edits: 3× that, at least 3 s). 1 s: Telegram asks bots for
    # at most ~1 message per second per chat and ~30 per second overall, and flood control answers 429 beyond.
    STREAM_DRAFT_INTERVAL: float = Field(1.0, ge=0.05, le=30)
    # --- end streamed replies ---

    @field_validator("ADMIN_IDS", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("REDIS_SENTINELS", mode="before")
    @classmethod
    def _split_sentinels(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        sentinels = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            host, _, port = part.rpartition(":")
            if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port, got {part!r}")
            sentinels.append((host.strip("[]"), int(port)))
        return sentinels

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
        return value

    @field_validator("OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_MODEL_NAME", "OPENAI_MODEL_NAME",
                     "REDIS_URL", "REDIS_SENTINEL_MASTER", "REDIS_PREFIX", "REDIS_BOT_PREFIX", "TELEGRAM_API_URL",
                     "BOT_TOKEN", "WEBHOOK_URL", "WEBHOOK_SECRET", "METRICS_PORT", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("LLM_HEDGE_DELAY")
    @classmethod
    def _hedge_delay(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from plugins.llm_fallback import HedgePolicy  # loads the engine: only when the setting is used

        HedgePolicy.from_setting(value)  # raises ValueError naming the setting
        return value.strip().lower()

    @field_validator("BOT_TOKEN")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not BOT_TOKEN_SHAPE.fullmatch(value.get_secret_value().strip()):
            raise ValueError("malformed: expected <bot id>:<secret> as @BotFather gives it")
        return SecretStr(value.get_secret_value().strip()) if value is not None else None

    @field_validator("LOG_LEVEL")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"unknown level {value!r}; use one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("STREAMING", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("WEBHOOK_PATH")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("WEBHOOK_PATH must start with /")
        return value

    @field_validator("WEBHOOK_URL")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("WEBHOOK_URL must be an http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator("METRICS_PORT")
    @classmethod
    def _metrics_package(cls, value: int | None) -> int | None:
        if value is not None and importlib.util.find_spec("prometheus_client") is None:
            raise ValueError("set, but prometheus-client is not installed: pip install 'luka-bot[metrics]' "
                             "(or unset METRICS_PORT)")
        return value

    @model_validator(mode="after")
    def _check_redis(self) -> Settings:
        if bool(self.REDIS_SENTINELS) != bool(self.REDIS_SENTINEL_MASTER):
            raise ValueError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together (Sentinel host:port list and "
                             "the master's name)")
        plugin, bot = self.redis_prefixes()
        if plugin.startswith(bot) or bot.startswith(plugin):
            raise ValueError(f"REDIS_PREFIX ({plugin!r}) and REDIS_BOT_PREFIX ({bot!r}) must not overlap: "
                             "clearing the fallback state would delete conversations")
        return self

    def redis_prefixes(self) -> tuple[str, str]:
        """Key prefixes of the fallback state and of the bot's data: `llm:<bot id>:`, `luka:<bot id>:` by default.

        The bot id is the number before ':' in `BOT_TOKEN`, so two bots can share one Redis.
        """
        token = self.BOT_TOKEN.get_secret_value() if self.BOT_TOKEN else ""
        bot_id, colon, _ = token.partition(":")
        scope = f"{bot_id}:" if colon and bot_id.isascii() and bot_id.isdigit() else ""
        return self.REDIS_PREFIX or f"llm:{scope}", self.REDIS_BOT_PREFIX or f"luka:{scope}"

    @model_validator(mode="after")
    def _check_providers(self) -> Settings:
        order = self.AVAILABLE_PROVIDERS
        if not order:
            raise ValueError("AVAILABLE_PROVIDERS: at least one provider is required")
        if self.LLM_MAX_COOLDOWN < self.LLM_FAILURE_COOLDOWN:
            raise ValueError("LLM_MAX_COOLDOWN must be at least LLM_FAILURE_COOLDOWN")
        known = set(BUILTIN_PROVIDERS) | set(self.LLM_EXTRA_PROVIDERS)
        for name, models in order.items():
            if name not in known:
                raise ValueError(
                    f"AVAILABLE_PROVIDERS: unknown provider {name!r} (known: {', '.join(sorted(known))}; "
                    "declare other OpenAI-compatible endpoints in LLM_EXTRA_PROVIDERS)"
                )
            if not models or not all(isinstance(m, str) and m.strip() for m in models):
                raise ValueError(f"AVAILABLE_PROVIDERS: provider {name!r} needs a non-empty list of model names")
        return self

    def secret_values(self) -> list[str]:
        """Every configured secret (Telegram token, API keys, webhook secret), for redaction."""
        secrets = [self.BOT_TOKEN, self.OPENAI_API_KEY, self.WEBHOOK_SECRET,
                   *(extra.api_key for extra in self.LLM_EXTRA_PROVIDERS.values())]
        return [value for secret in secrets if secret is not None and (value := secret.get_secret_value())]

    def provider_specs(self) -> list[ProviderSpec]:
        """The providers in priority order, as the fallback engine takes them."""
        return [self._spec(name, models) for name, models in self.AVAILABLE_PROVIDERS.items()]

    def _spec(self, name: str, models: list[str]) -> ProviderSpec:
        from plugins.llm_fallback import OPENAI_DEFAULT_URL, ProviderSpec, ollama_api_url

        connect = self.LLM_CONNECT_TIMEOUT
        if name == "ollama":
            return ProviderSpec("ollama", "ollama", ollama_api_url(self.OLLAMA_URL),
                                _models(self.OLLAMA_MODEL_NAME, models), None, self.OLLAMA_TIMEOUT, connect)
        if name == "openai":
            return ProviderSpec("openai", "openai", (self.OPENAI_BASE_URL or OPENAI_DEFAULT_URL).rstrip("/"),
                                _models(self.OPENAI_MODEL_NAME, models), self.OPENAI_API_KEY, self.OPENAI_TIMEOUT,
                                connect, configured=self.OPENAI_API_KEY is not None)
        extra = self.LLM_EXTRA_PROVIDERS[name]
        return ProviderSpec(name, "openai", extra.base_url.rstrip("/"), tuple(models), extra.api_key, extra.timeout,
                            connect)


def _models(preferred: str | None, listed: list[str]) -> tuple[str, ...]:
    """`*_MODEL_NAME`, when set, is tried first, then the provider's models from AVAILABLE_PROVIDERS."""
    names = [preferred] if preferred else []
    return tuple(dict.fromkeys(names + listed))


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; raise `ConfigError` with one line per invalid setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        lines = []
        for problem in error.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in problem["loc"])
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}" if where else message)
        raise ConfigError("Invalid configuration — " + "; ".join(lines)) from None
    except SettingsError as error:  # e.g. malformed JSON in AVAILABLE_PROVIDERS
        raise ConfigError(f"Invalid configuration — {error}") from None


_settings: Settings | None = None


def get_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def __getattr__(name: str) -> Any:
    if name == "settings":
        return get_settings()
    raise AttributeError(name)

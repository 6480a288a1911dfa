"""The bot's settings, read from the environment and `.env` (pydantic-settings).

One module per area, combined into `Settings` (settings.py):

- telegram.py: BOT_TOKEN, ADMIN_IDS, TELEGRAM_API_URL, DEFAULT_LANGUAGE, WEBHOOK_*;
- bot.py: how the process runs: LOG_LEVEL, METRICS_*, BOT_MAX_CONCURRENT_UPDATES, INBOX_*, conversations,
  streamed replies;
- user_limits.py: what one user may cost (USER_RATE_*, USER_DAILY_TOKENS);
- redis.py: REDIS_*;
- providers.py: the providers themselves: AVAILABLE_PROVIDERS (order and default models),
  OLLAMA_*, OPENAI_*, LLM_EXTRA_PROVIDERS, LLM_CONNECT_TIMEOUT, and `provider_specs()`;
- fallback.py: how the fallback engine treats providers over time (cooldowns, hedging, admission):
  new fallback settings go there;
- values.py: the rules every area shares (a blank value means unset, http(s) addresses, lists, JSON).

`load_settings()` turns any invalid value into one `ConfigError` naming the setting;
`get_settings()` (also the module attribute `settings`) is the process-wide instance.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from luka_bot.core.config.bot import LOG_LEVELS
from luka_bot.core.config.providers import AVAILABLE_PROVIDERS, BUILTIN_PROVIDERS, ExtraProvider
from luka_bot.core.config.settings import Settings

__all__ = ["AVAILABLE_PROVIDERS", "BUILTIN_PROVIDERS", "LOG_LEVELS", "ConfigError", "ExtraProvider", "Settings",
           "get_settings", "load_settings"]


class ConfigError(ValueError):
    """Invalid configuration: the message names the setting; start-up stops."""


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
    except SettingsError as error:  # a source that cannot be read at all
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

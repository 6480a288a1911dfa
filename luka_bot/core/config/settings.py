"""`Settings`: every area's settings in one object, read from the environment and `.env`."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from luka_bot.core.config.bot import BotSettings
from luka_bot.core.config.fallback import FallbackSettings
from luka_bot.core.config.providers import ProviderSettings
from luka_bot.core.config.redis import RedisSettings
from luka_bot.core.config.telegram import TelegramSettings
from luka_bot.core.config.user_limits import UserLimitSettings
from luka_bot.core.config.values import drop_blank_values


class Settings(TelegramSettings, BotSettings, UserLimitSettings, RedisSettings, ProviderSettings, FallbackSettings,
               BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, data: Any) -> Any:
        return drop_blank_values(data)

    @model_validator(mode="after")
    def _prefixes_apart(self) -> Settings:
        plugin, bot = self.redis_prefixes()
        if plugin.startswith(bot) or bot.startswith(plugin):
            raise ValueError(f"REDIS_PREFIX ({plugin!r}) and REDIS_BOT_PREFIX ({bot!r}) must not overlap: "
                             "clearing the fallback state would delete conversations")
        return self

    @model_validator(mode="after")
    def _budgets_name_providers(self) -> Settings:
        unknown = sorted(set(self.LLM_TOKEN_BUDGETS) - set(self.AVAILABLE_PROVIDERS))
        if unknown:
            raise ValueError(f"LLM_TOKEN_BUDGETS: {', '.join(map(repr, unknown))} is not in AVAILABLE_PROVIDERS "
                             f"({', '.join(self.AVAILABLE_PROVIDERS)})")
        return self

    def redis_prefixes(self) -> tuple[str, str]:
        """Key prefixes of the fallback state and of the bot's data: `llm:<bot id>:`, `luka:<bot id>:` by default.

        The bot id is the number before ':' in `BOT_TOKEN`, so two bots can share one Redis.
        """
        token = self.BOT_TOKEN.get_secret_value() if self.BOT_TOKEN else ""
        bot_id, colon, _ = token.partition(":")
        scope = f"{bot_id}:" if colon and bot_id.isascii() and bot_id.isdigit() else ""
        return self.REDIS_PREFIX or f"llm:{scope}", self.REDIS_BOT_PREFIX or f"luka:{scope}"

    def secret_values(self) -> list[str]:
        """Every configured secret (Telegram token, API keys, webhook secret), for redaction."""
        secrets = [self.BOT_TOKEN, self.OPENAI_API_KEY, self.WEBHOOK_SECRET,
                   *(extra.api_key for extra in self.LLM_EXTRA_PROVIDERS.values())]
        return [value for secret in secrets if secret is not None and (value := secret.get_secret_value())]

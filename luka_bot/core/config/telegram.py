"""Telegram: the bot's identity, who administers it, where the Bot API is, how updates arrive."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from luka_bot.core.config.values import comma_list, http_url
from luka_bot.core.locale_files import shipped_languages

BOT_TOKEN_SHAPE = re.compile(r"\d+:[A-Za-z0-9_-]+")
"""What @BotFather hands out: `<bot id>:<secret>`."""


class TelegramSettings(BaseModel):
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
    # Telegram's flood limits: one send budget per bot (docs/operations.md, "Flood control")
    TELEGRAM_SENDS_PER_SECOND: float = Field(30.0, gt=0, le=1000)  # the whole bot, every chat
    TELEGRAM_SENDS_BURST: int = Field(20, ge=1, le=1000)  # below ~30: slack for requests that arrive early
    TELEGRAM_CHAT_SENDS_PER_SECOND: float = Field(1.0, gt=0, le=100)  # one chat
    TELEGRAM_CHAT_BURST: int = Field(3, ge=1, le=100)
    TELEGRAM_GROUP_SENDS_PER_MINUTE: float = Field(20.0, gt=0, le=6000)  # one group, on top of the chat's rate
    TELEGRAM_SEND_DEADLINE: float = Field(300.0, ge=1, le=86400)  # an answer is retried after 429s this long

    @field_validator("BOT_TOKEN")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not BOT_TOKEN_SHAPE.fullmatch(token):
            raise ValueError("malformed: expected <bot id>:<secret> as @BotFather gives it")
        return SecretStr(token)

    @field_validator("ADMIN_IDS", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else comma_list(value)

    @field_validator("TELEGRAM_API_URL")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @field_validator("DEFAULT_LANGUAGE")
    @classmethod
    def _shipped_language(cls, value: str) -> str:
        language = value.strip().lower()
        shipped = shipped_languages()
        if language not in shipped:
            raise ValueError(f"no translation for {value!r}; the bot ships: {', '.join(shipped)}")
        return language

    @field_validator("WEBHOOK_URL")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        url = http_url(value)
        return url.rstrip("/") if url else url

    @field_validator("WEBHOOK_PATH")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("WEBHOOK_PATH must start with /")
        return value

"""Shared state: the Redis every process of the bot uses (unset: each process keeps its own memory)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from luka_bot.core.config.values import comma_list


class RedisSettings(BaseModel):
    REDIS_URL: str | None = None
    REDIS_SENTINELS: Annotated[list[tuple[str, int]], NoDecode] = []
    REDIS_SENTINEL_MASTER: str | None = None
    REDIS_PREFIX: str | None = None  # fallback state; default llm:<bot id>:
    REDIS_BOT_PREFIX: str | None = None  # conversations; default luka:<bot id>:
    REDIS_MAX_CONNECTIONS: int = Field(20, ge=1, le=10_000)
    REDIS_POOL_TIMEOUT: float = Field(5.0, gt=0)
    REDIS_SOCKET_TIMEOUT: float = Field(0.5, gt=0)
    REDIS_RETRY_INTERVAL: float = Field(5.0, gt=0)

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
        return value

    @field_validator("REDIS_SENTINELS", mode="before")
    @classmethod
    def _split_sentinels(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        sentinels = []
        for part in comma_list(value):
            host, _, port = part.rpartition(":")
            if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port, got {part!r}")
            sentinels.append((host.strip("[]"), int(port)))
        return sentinels

    @model_validator(mode="after")
    def _sentinels_with_master(self) -> RedisSettings:
        if bool(self.REDIS_SENTINELS) != bool(self.REDIS_SENTINEL_MASTER):
            raise ValueError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together (Sentinel host:port list and "
                             "the master's name)")
        return self

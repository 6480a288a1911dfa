"""How the bot process runs: logs, metrics, how many updates at once, the durable inbox, conversations,
streamed replies, formatting."""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class BotSettings(BaseModel):
    LOG_LEVEL: str = "INFO"
    # Prometheus /metrics (needs the `metrics` extra; unset METRICS_PORT: no metrics)
    METRICS_PORT: int | None = Field(None, gt=0, lt=65536)
    METRICS_HOST: str = "0.0.0.0"

    # Updates handled at once (the inbox's middleware, after a chat's turn; polling and webhook); 0 = no bound.
    # A busy bot queues work instead of blaming providers for its own lag (docs/performance.md, "Load burst").
    BOT_MAX_CONCURRENT_UPDATES: int = Field(64, ge=0)

    # Durable inbox (docs/operations.md): another process takes over a message its process left unrefreshed
    # this long (a live process refreshes every quarter of it, however long a reply takes).
    INBOX_ORPHAN_AFTER: float = Field(30.0, ge=1, le=3600)
    # An answer sent this many seconds or more after its question quotes the question (0: never).
    LATE_ANSWER_QUOTE_AFTER: float = Field(60.0, ge=0)

    # Conversations
    HISTORY_MAX_MESSAGES: int = Field(20, ge=2, le=200)
    HISTORY_TTL: int = Field(7 * 24 * 3600, gt=0)

    # on: private replies stream into a draft (sendMessageDraft; edits of one message where drafts are refused);
    # off: "typing…", then one final message.
    STREAMING: Literal["on", "off"] = "on"
    # Seconds between two frames of a reply's draft (edits: 3× that, at least 3 s). 1 s: Telegram asks bots for
    # at most ~1 message per second per chat and ~30 per second overall, and flood control answers 429 beyond.
    STREAM_DRAFT_INTERVAL: float = Field(1.0, ge=0.05, le=30)

    # on: the model's Markdown is shown formatted (text + Telegram entities: bold, lists, code blocks, links,
    # tables), drafts included; off: the model's text as it was written, plain.
    MARKDOWN: Literal["on", "off"] = "on"

    @field_validator("LOG_LEVEL")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"unknown level {value!r}; use one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("METRICS_PORT")
    @classmethod
    def _metrics_package(cls, value: int | None) -> int | None:
        if value is not None and importlib.util.find_spec("prometheus_client") is None:
            raise ValueError("set, but prometheus-client is not installed: pip install 'luka-bot[metrics]' "
                             "(or unset METRICS_PORT)")
        return value

    @field_validator("STREAMING", "MARKDOWN", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

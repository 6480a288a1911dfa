"""Forcing a provider: the one place that says which provider and duration are acceptable.

Used by `LLMProviderFallback.force_provider` (the seed's API), the Telegram `/llm_force` command
and the shell's `luka-bot llm force`, so all three accept and refuse exactly the same things.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

MIN_FORCE_SECONDS = 10
MAX_FORCE_SECONDS = 24 * 3600
DEFAULT_FORCE_SECONDS = 1800


class Refusal(StrEnum):
    SYNTAX = "syntax"
    UNKNOWN_PROVIDER = "unknown_provider"
    NOT_CONFIGURED = "not_configured"
    DURATION = "duration"


class ForceError(ValueError):
    """A force that is refused (nothing changes); the message says why, for an admin.

    `refusal` lets each front end word it in the admin's language; `setting` names what to set
    for a provider that is not configured.
    """

    def __init__(self, refusal: Refusal, message: str, *, provider: str | None = None, setting: str | None = None):
        super().__init__(message)
        self.refusal = refusal
        self.provider = provider
        self.setting = setting


@dataclass(frozen=True)
class ForceRequest:
    provider: str
    seconds: int


def check_force(provider: str, seconds: float, *, order: Sequence[str], configured: Sequence[str],
                setting_hints: Mapping[str, str] | None = None) -> None:
    """Raise `ForceError` unless `provider` is configured and `seconds` within the limits."""
    if provider not in order:
        raise ForceError(Refusal.UNKNOWN_PROVIDER, f"unknown provider {provider!r}; configured: {', '.join(configured)}",
                         provider=provider)
    if provider not in configured:
        hint = (setting_hints or {}).get(provider)
        raise ForceError(Refusal.NOT_CONFIGURED,
                         f"provider {provider!r} is not configured" + (f" (set {hint})" if hint else ""),
                         provider=provider, setting=hint)
    if not MIN_FORCE_SECONDS <= seconds <= MAX_FORCE_SECONDS:
        raise ForceError(Refusal.DURATION, f"seconds must be between {MIN_FORCE_SECONDS} and {MAX_FORCE_SECONDS}, "
                         f"not {seconds:g}")


def parse_force(args: str | None, *, order: Sequence[str], configured: Sequence[str],
                setting_hints: Mapping[str, str] | None = None) -> ForceRequest:
    """`<provider> [seconds]` (an admin's text) → a checked `ForceRequest`, or `ForceError`.

    Only ASCII digits count as seconds: `str.isdigit()` also accepts "²", "①" and full-width digits.
    """
    parts = (args or "").split()
    if not 1 <= len(parts) <= 2 or not parts[0].isascii():
        raise ForceError(Refusal.SYNTAX, "expected <provider> [seconds]")
    provider = parts[0].lower()
    seconds = DEFAULT_FORCE_SECONDS
    if len(parts) == 2:
        if not (parts[1].isascii() and parts[1].isdigit()) or len(parts[1]) > len(str(MAX_FORCE_SECONDS)):
            raise ForceError(Refusal.DURATION,
                             f"seconds must be a whole number between {MIN_FORCE_SECONDS} and {MAX_FORCE_SECONDS}")
        seconds = int(parts[1])
    check_force(provider, seconds, order=order, configured=configured, setting_hints=setting_hints)
    return ForceRequest(provider, seconds)

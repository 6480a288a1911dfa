"""Is a configured model retired or deprecated by its provider? pydantic-ai's own data says.

pydantic-ai keeps the vendors' deprecation notices (OpenAI's among them) and publishes them per
model through a public API: a provider class's `model_profile(name)["deprecation"]`, a
`pydantic_ai.profiles.ModelDeprecation` (`retirement_date`, `replacement`, `rerouted_to`,
`source_url`). pydantic-ai itself only acts on it by emitting `DeprecatedModelWarning` when a
request is sent; this module asks the same question up front, so start-up, status and alerts
can say it before a user's request fails.

The provider kind picks the table, as pydantic-ai does for the models it builds: `openai`
(OpenAI and every OpenAI-compatible endpoint reached through `OpenAIProvider`) uses OpenAI's
notices; `ollama` has none (local models are never retired by a vendor).

Imports nothing but pydantic-ai, so any caller (the bot, the plugin's status and alerts) can use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Protocol

from pydantic_ai.profiles import ModelDeprecation
from pydantic_ai.providers.ollama import OllamaProvider
from pydantic_ai.providers.openai import OpenAIProvider

PROFILES = {"openai": OpenAIProvider.model_profile, "ollama": OllamaProvider.model_profile}
"""Provider kind → pydantic-ai's per-model profile lookup (a static method: no client is built)."""


class Lifecycle(StrEnum):
    CURRENT = "current"
    """Not in the vendor's deprecation notices (or a kind without notices)."""
    DEPRECATED = "deprecated"
    """Announced: it still answers until its retirement date (if one is given)."""
    RETIRED = "retired"
    """Past its retirement date: requests fail (or are answered by `rerouted_to`)."""


@dataclass(frozen=True)
class ModelStatus:
    provider: str
    model: str
    lifecycle: Lifecycle
    retirement_date: date | None = None
    replacement: str | None = None
    rerouted_to: str | None = None
    source_url: str | None = None

    @property
    def current(self) -> bool:
        return self.lifecycle is Lifecycle.CURRENT

    def describe(self, today: date | None = None) -> str:
        """One English sentence for logs and the CLI, e.g.
        `openai model gpt-4-turbo was retired on 2026-10-23: its requests fail; replacement: gpt-5.6-sol (see …)`.
        """
        today = today or utc_today()
        subject = f"{self.provider} model {self.model}"
        if self.lifecycle is Lifecycle.CURRENT:
            return f"{subject} is current"
        if self.lifecycle is Lifecycle.RETIRED:
            effect = (f"its requests are answered by {self.rerouted_to}" if self.rerouted_to
                      else "its requests fail")
            text = f"{subject} was retired on {self.retirement_date}: {effect}"
        elif self.retirement_date is None:
            text = f"{subject} is deprecated (no retirement date announced)"
        else:
            days = (self.retirement_date - today).days
            text = f"{subject} is deprecated: retirement on {self.retirement_date} (in {days} day{'s' * (days != 1)})"
        text += f"; replacement: {self.replacement}" if self.replacement else "; no replacement named"
        return text + (f" (see {self.source_url})" if self.source_url else "")


def utc_today() -> date:
    return datetime.now(UTC).date()


def model_status(kind: str, model: str, *, provider: str | None = None, today: date | None = None) -> ModelStatus:
    """What the vendor announced for `model` served by a provider of `kind` (`openai`, `ollama`).

    `provider` is the name shown in texts (default: the kind); `today` is injectable for tests.
    """
    name = provider or kind
    lookup = PROFILES.get(kind)
    deprecation = (lookup(model) or {}).get("deprecation") if lookup else None
    if not isinstance(deprecation, ModelDeprecation):
        return ModelStatus(name, model, Lifecycle.CURRENT)
    retired = deprecation.retirement_date is not None and deprecation.retirement_date <= (today or utc_today())
    return ModelStatus(name, model, Lifecycle.RETIRED if retired else Lifecycle.DEPRECATED,
                       deprecation.retirement_date, deprecation.replacement, deprecation.rerouted_to,
                       deprecation.source_url)


class ConfiguredProvider(Protocol):
    """What `outdated_models` reads of a provider (a `ProviderSpec` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def models(self) -> Sequence[str]: ...


def outdated_models(providers: Iterable[ConfiguredProvider], *, today: date | None = None) -> list[ModelStatus]:
    """The retired and deprecated models among the providers' models, in configuration order."""
    statuses = (model_status(p.kind, model, provider=p.name, today=today) for p in providers for model in p.models)
    return [status for status in statuses if not status.current]

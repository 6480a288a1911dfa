"""The providers: what each one is (`ProviderSpec`), its pydantic-ai models built once, the registry.

Every provider speaks the OpenAI chat-completions protocol (Ollama through its `/v1` API).
Each gets one `AsyncOpenAI` client, so one HTTP connection pool shared by all its models and
requests, with SDK retries off (fallback is our retry) and a short connect timeout (a dead
host is noticed in seconds while a slow generation still has the full read timeout).

OpenAI's GPT-5.4 and later models refuse function tools over Chat Completions while they
reason (pydantic-ai raises `ModelRequestRejectedError` before sending), and an agent's tools
and structured output are function tools. So for those models reasoning is turned off
(`thinking=False`, pydantic-ai's own remedy); a model that always reasons cannot be helped that
way, and `refuses_chat_tools` names it so start-up can say so.

Each model's context window goes into its profile (`ModelProfile.context_window`, read back as
`Model.context_window`), where each attempt fits the request to it (`fit.py`): the window set for it
(`ProviderSpec.context_windows`); else for Ollama its default `num_ctx` (Ollama cuts a longer prompt
from the front, silently); else what pydantic-ai knows of the model (OpenAI's published windows);
else none (the request is sent whole, and fitted to the window the server names if it refuses it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import httpx2
from openai import AsyncOpenAI
from pydantic import SecretStr
from pydantic_ai.models import Model
from pydantic_ai.models.ollama import OllamaModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.profiles import ModelProfile, merge_profile
from pydantic_ai.profiles.openai import OpenAIModelProfile
from pydantic_ai.providers.ollama import OllamaProvider
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

logger = logging.getLogger(__name__)

ProviderKind = Literal["ollama", "openai"]
OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
DEFAULT_SETTING_HINTS = {"openai": "OPENAI_API_KEY", "ollama": "OLLAMA_URL"}
"""The settings of the two built-in providers, for specs that name none (`ProviderSpec.setting_hint`)."""
DEFAULT_ADDRESS_SETTINGS = {"openai": "OPENAI_BASE_URL", "ollama": "OLLAMA_URL"}
"""Where the two built-in providers' addresses are set (named when one cannot be reached)."""
OLLAMA_CONTEXT_WINDOW = 4096
"""Tokens Ollama gives a model unless told otherwise (its `num_ctx`; current versions' default, set on the
server by `OLLAMA_CONTEXT_LENGTH` or per model): its OpenAI-compatible API takes no per-request `num_ctx`."""


def ollama_api_url(url: str) -> str:
    """Ollama's OpenAI-compatible base URL, accepting the URL with or without `/v1`."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


@dataclass(frozen=True)
class ProviderSpec:
    """One provider in the fallback order."""

    name: str
    kind: ProviderKind
    base_url: str
    """OpenAI-compatible base URL, ending in `/v1` for Ollama."""
    models: tuple[str, ...]
    """Tried in this order within the provider (a 404 moves to the next)."""
    api_key: SecretStr | None = field(default=None, repr=False)
    timeout: float = 60.0
    connect_timeout: float = 3.0
    configured: bool = True
    """False when a required setting (an API key) is missing: shown in status, never tried."""
    setting_hint: str | None = None
    """The setting an operator fixes when this provider refuses our credentials or is not configured
    (e.g. `OPENAI_API_KEY`); named in logs, alerts and `/llm_force`'s refusals."""
    address_setting: str | None = None
    """The setting of its address (e.g. `OLLAMA_URL`), named when it cannot be reached."""
    context_windows: Mapping[str, int] = field(default_factory=dict, compare=False)
    """Tokens (prompt and answer together) the server gives each model, by model name; `"*"`: every model."""

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key.get_secret_value(),) if self.api_key else ()

    def context_window(self, model: str) -> int | None:
        """The window set for `model`; else Ollama's default; else None (pydantic-ai's figure, if it has one)."""
        window = self.context_windows.get(model, self.context_windows.get("*"))
        return OLLAMA_CONTEXT_WINDOW if window is None and self.kind == "ollama" else window


def _tools_need_reasoning_off(profile: ModelProfile) -> bool:
    return bool(profile.get("openai_chat_function_tools_require_reasoning_off"))


def refuses_chat_tools(kind: ProviderKind, model_name: str) -> bool:
    """True for a model that takes no tools over Chat Completions whatever its settings (it always reasons)."""
    profile = (OllamaProvider if kind == "ollama" else OpenAIProvider).model_profile(model_name) or ModelProfile()
    return _tools_need_reasoning_off(profile) and bool(profile.get("thinking_always_enabled"))


def _model_settings(profile: ModelProfile) -> ModelSettings:
    if _tools_need_reasoning_off(profile):
        return ModelSettings(max_retries=0, thinking=False)
    return ModelSettings(max_retries=0)


def _profile(provider: OllamaProvider | OpenAIProvider, model_name: str, window: int | None) -> ModelProfile:
    """The provider's profile for `model_name`, with its context window if set, where a stream without a
    finish reason is an error.

    Both Ollama and OpenAI end every complete stream with a `finish_reason`; a stream that stops
    without one was cut (a proxy timeout, a crashed runner), and must not pass as a whole answer.
    """
    ours = OpenAIModelProfile(openai_chat_streaming_requires_finish_reason=True)
    if window is not None:
        ours = merge_profile(ours, ModelProfile(context_window=window))
    return merge_profile(provider.model_profile(model_name) or ModelProfile(), ours)


class ProviderClient:
    """A provider's HTTP client and pydantic-ai models, created once per process."""

    def __init__(self, spec: ProviderSpec):
        self.spec = spec
        self.client = AsyncOpenAI(
            base_url=spec.base_url,
            api_key=spec.api_key.get_secret_value() if spec.api_key else "api-key-not-set",
            max_retries=0,
            timeout=httpx2.Timeout(spec.timeout, connect=spec.connect_timeout),
        )
        self.models: dict[str, Model] = {}
        for model_name in spec.models:
            if spec.kind == "ollama":
                provider = OllamaProvider(openai_client=self.client)
                profile = _profile(provider, model_name, spec.context_window(model_name))
                self.models[model_name] = OllamaModel(
                    model_name, provider=provider, settings=_model_settings(profile), profile=profile
                )
                logger.debug("✅ Created ollama model: %s @ %s", model_name, spec.base_url)
            else:
                provider = OpenAIProvider(openai_client=self.client)
                profile = _profile(provider, model_name, spec.context_window(model_name))
                self.models[model_name] = OpenAIChatModel(
                    model_name, provider=provider, settings=_model_settings(profile), profile=profile
                )
                logger.debug("✅ Created OpenAI model: %s", model_name)

    async def aclose(self) -> None:
        await self.client.close()


class ProviderRegistry:
    """Every provider in priority order (configured or not), and their models."""

    def __init__(self, specs: Sequence[ProviderSpec], models: Mapping[str, Mapping[str, Model]] | None = None):
        if not specs:
            raise ValueError("at least one provider is required")
        self.specs: dict[str, ProviderSpec] = {spec.name: spec for spec in specs}
        self.clients: dict[str, ProviderClient] = {}
        if models is None:
            self.clients = {spec.name: ProviderClient(spec) for spec in specs if spec.configured}
            models = {name: client.models for name, client in self.clients.items()}
        self.models: dict[str, Mapping[str, Model]] = dict(models)

    @property
    def order(self) -> list[str]:
        return list(self.specs)

    @property
    def configured(self) -> list[str]:
        return [name for name, spec in self.specs.items() if spec.configured]

    @property
    def primary(self) -> str:
        return self.order[0]

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for spec in self.specs.values() for s in spec.secrets)

    @property
    def setting_hints(self) -> dict[str, str]:
        hints = {name: spec.setting_hint or DEFAULT_SETTING_HINTS.get(name) for name, spec in self.specs.items()}
        return {name: hint for name, hint in hints.items() if hint}

    def address_setting(self, provider: str) -> str | None:
        spec = self.specs[provider]
        return spec.address_setting or DEFAULT_ADDRESS_SETTINGS.get(provider) or spec.setting_hint

    def spec(self, provider: str) -> ProviderSpec:
        spec = self.specs.get(provider)
        if spec is None:
            raise ValueError(f"unknown provider {provider!r}; known: {', '.join(self.order)}")
        return spec

    def model(self, provider: str, model: str) -> Model:
        return self.models[provider][model]

    def model_list(self, provider: str) -> list[Model]:
        return list(self.models.get(provider, {}).values())

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

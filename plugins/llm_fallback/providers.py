"""Provider definitions: what each provider is, and its pydantic-ai models built once.

Every provider speaks the OpenAI chat-completions protocol (Ollama through its `/v1` API).
Each gets one `AsyncOpenAI` client, so one HTTP connection pool shared by all its models and
requests, with SDK retries off (fallback is our retry) and a short connect timeout (a dead
host is noticed in seconds while a slow generation still has the full read timeout).
"""

from __future__ import annotations

import logging
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

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key.get_secret_value(),) if self.api_key else ()


def _strict_streams(provider: OllamaProvider | OpenAIProvider, model_name: str) -> ModelProfile:
    """The provider's profile for `model_name`, where a stream without a finish reason is an error.

    Both Ollama and OpenAI end every complete stream with a `finish_reason`; a stream that stops
    without one was cut (a proxy timeout, a crashed runner), and must not pass as a whole answer.
    """
    return merge_profile(provider.model_profile(model_name) or ModelProfile(),
                         OpenAIModelProfile(openai_chat_streaming_requires_finish_reason=True))


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
        settings = ModelSettings(max_retries=0)
        self.models: dict[str, Model] = {}
        for model_name in spec.models:
            if spec.kind == "ollama":
                provider = OllamaProvider(openai_client=self.client)
                self.models[model_name] = OllamaModel(
                    model_name, provider=provider, settings=settings, profile=_strict_streams(provider, model_name)
                )
                logger.debug("✅ Created ollama model: %s @ %s", model_name, spec.base_url)
            else:
                provider = OpenAIProvider(openai_client=self.client)
                self.models[model_name] = OpenAIChatModel(
                    model_name, provider=provider, settings=settings, profile=_strict_streams(provider, model_name)
                )
                logger.debug("✅ Created OpenAI model: %s", model_name)

    async def aclose(self) -> None:
        await self.client.close()

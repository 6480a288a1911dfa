"""The LLM providers: their order, their models, where they are and how to reach them.

Provider priority is the key order of `AVAILABLE_PROVIDERS` (first key = primary), as the seed
has it; it can be overridden from the environment as JSON, e.g.
`AVAILABLE_PROVIDERS='{"openai": ["gpt-6-luna"], "ollama": ["llama3.2"]}'`.

`LLM_CONTEXT_WINDOWS` is here, not with the fallback settings: a window is what a provider's server
gives a model (Ollama's `num_ctx`, the size LM Studio or llama.cpp loaded the model with), like its
address and timeouts, and it names providers and models of `AVAILABLE_PROVIDERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from luka_bot.core.config.values import http_url, json_value

if TYPE_CHECKING:  # the provider clients (pydantic-ai, openai) load only when specs are built
    from plugins.llm_fallback import ProviderSpec

# Provider order: 1st key = primary, 2nd = fallback (dicts keep insertion order).
# OpenAI's models are ones pydantic-ai lists as current, with no retirement announced in its deprecation
# table (tests/test_default_models.py fails 30 days before one is due): gpt-6.1-terra and gpt-6-luna are
# the replacements OpenAI names for gpt-5-mini and gpt-5-nano. Not gpt-6.1-sol (named for gpt-5): it always
# reasons, and OpenAI refuses tools over Chat Completions while a model reasons, so it could not run the chat.
AVAILABLE_PROVIDERS: dict[str, list[str]] = {
    "ollama": ["gpt-oss", "llama3.2"],  # 1st key = Primary
    "openai": ["gpt-6.1-terra", "gpt-6-luna"],  # 2nd key = Fallback
}
BUILTIN_PROVIDERS = ("ollama", "openai")
MIN_CONTEXT_WINDOW = 512
"""Tokens: a smaller window could not hold the bot's instructions and tools beside a message."""


class ExtraProvider(BaseModel):
    """Another OpenAI-compatible endpoint, declared in `LLM_EXTRA_PROVIDERS`."""

    base_url: str
    api_key: SecretStr | None = None
    timeout: float = Field(60.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return http_url(value) or value


class ProviderSettings(BaseModel):
    AVAILABLE_PROVIDERS: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=lambda: {name: list(models) for name, models in AVAILABLE_PROVIDERS.items()})
    LLM_EXTRA_PROVIDERS: Annotated[dict[str, ExtraProvider], NoDecode] = {}
    LLM_CONNECT_TIMEOUT: float = Field(3.0, gt=0)
    # Tokens per provider ({"ollama": 8192}) or per model ({"openai": {"gpt-6-luna": 400000, "*": 128000}}).
    # Unset: Ollama's default num_ctx (4096), OpenAI's models as pydantic-ai knows them, others unknown.
    LLM_CONTEXT_WINDOWS: Annotated[dict[str, int | dict[str, int]], NoDecode] = {}

    # Ollama
    OLLAMA_URL: str = "http://localhost:11434"
    OLLAMA_MODEL_NAME: str | None = None
    OLLAMA_TIMEOUT: float = Field(60.0, gt=0)

    # OpenAI (or an OpenAI-compatible API)
    OPENAI_API_KEY: SecretStr | None = None
    OPENAI_MODEL_NAME: str | None = None
    OPENAI_TIMEOUT: float = Field(60.0, gt=0)
    OPENAI_BASE_URL: str | None = None

    @field_validator("AVAILABLE_PROVIDERS", "LLM_EXTRA_PROVIDERS", "LLM_CONTEXT_WINDOWS", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return json_value(value)

    @field_validator("OLLAMA_URL", "OPENAI_BASE_URL")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return http_url(value)

    @model_validator(mode="after")
    def _known_providers_with_models(self) -> ProviderSettings:
        order = self.AVAILABLE_PROVIDERS
        if not order:
            raise ValueError("AVAILABLE_PROVIDERS: at least one provider is required")
        known = set(BUILTIN_PROVIDERS) | set(self.LLM_EXTRA_PROVIDERS)
        for name, models in order.items():
            if name not in known:
                raise ValueError(
                    f"AVAILABLE_PROVIDERS: unknown provider {name!r} (known: {', '.join(sorted(known))}; "
                    "declare other OpenAI-compatible endpoints in LLM_EXTRA_PROVIDERS)"
                )
            if not models or not all(isinstance(m, str) and m.strip() for m in models):
                raise ValueError(f"AVAILABLE_PROVIDERS: provider {name!r} needs a non-empty list of model names")
        for name, windows in self.LLM_CONTEXT_WINDOWS.items():
            if name not in order:
                raise ValueError(f"LLM_CONTEXT_WINDOWS: {name!r} is not a provider of AVAILABLE_PROVIDERS "
                                 f"({', '.join(order)})")
            known_models = self._model_names(name)
            for model, window in _windows(windows).items():
                where = f"{name}/{model}" if model != "*" else name
                if model != "*" and model not in known_models:
                    raise ValueError(f"LLM_CONTEXT_WINDOWS: {where} is not one of {name}'s models "
                                     f"({', '.join(known_models)}); \"*\" stands for all of them")
                if window < MIN_CONTEXT_WINDOW:
                    raise ValueError(f"LLM_CONTEXT_WINDOWS: {where}: {window} tokens is less than "
                                     f"{MIN_CONTEXT_WINDOW}; give the window its server uses (Ollama: num_ctx)")
        return self

    def _model_names(self, provider: str) -> tuple[str, ...]:
        preferred = {"ollama": self.OLLAMA_MODEL_NAME, "openai": self.OPENAI_MODEL_NAME}.get(provider)
        return _models(preferred, self.AVAILABLE_PROVIDERS[provider])

    def provider_specs(self) -> list[ProviderSpec]:
        """The providers in priority order, as the fallback engine takes them."""
        return [self._spec(name, models) for name, models in self.AVAILABLE_PROVIDERS.items()]

    def _spec(self, name: str, models: list[str]) -> ProviderSpec:
        from plugins.llm_fallback import OPENAI_DEFAULT_URL, ProviderSpec, ollama_api_url

        connect = self.LLM_CONNECT_TIMEOUT
        windows = _windows(self.LLM_CONTEXT_WINDOWS.get(name, {}))
        if name == "ollama":
            return ProviderSpec("ollama", "ollama", ollama_api_url(self.OLLAMA_URL), self._model_names(name), None,
                                self.OLLAMA_TIMEOUT, connect, context_windows=windows)
        if name == "openai":
            return ProviderSpec("openai", "openai", (self.OPENAI_BASE_URL or OPENAI_DEFAULT_URL).rstrip("/"),
                                self._model_names(name), self.OPENAI_API_KEY, self.OPENAI_TIMEOUT,
                                connect, configured=self.OPENAI_API_KEY is not None, context_windows=windows)
        extra = self.LLM_EXTRA_PROVIDERS[name]
        return ProviderSpec(name, "openai", extra.base_url.rstrip("/"), self._model_names(name), extra.api_key,
                            extra.timeout, connect, setting_hint=f"LLM_EXTRA_PROVIDERS[{name!r}]",
                            context_windows=windows)


def _windows(value: int | Mapping[str, int]) -> dict[str, int]:
    """A provider's `LLM_CONTEXT_WINDOWS` entry by model name: one number is every model's (`"*"`)."""
    return {"*": value} if isinstance(value, int) else dict(value)


def _models(preferred: str | None, listed: list[str]) -> tuple[str, ...]:
    """`*_MODEL_NAME`, when set, is tried first, then the provider's models from AVAILABLE_PROVIDERS."""
    names = [preferred.strip()] if preferred else []
    return tuple(dict.fromkeys(names + listed))

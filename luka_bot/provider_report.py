"""What start-up says about the LLM providers: which of them can actually answer.

A provider is named with its role, whether it is configured and whether its key is there (never
the key), the context window its prompts are fitted to when one is set (Ollama's default
`num_ctx` included), and "not checked yet": being configured is not proof that it works. A configured
model its vendor has retired is an ERROR (with the replacement), one it has deprecated a
WARNING (with the date), as is a model that cannot run the chat's tools. The last line says who
can answer, and what happens when the primary fails if no fallback can.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from luka_bot.core.config import Settings
from plugins.llm_fallback import ProviderSpec
from plugins.llm_fallback.deprecations import Lifecycle, ModelStatus, model_status, utc_today
from plugins.llm_fallback.providers import DEFAULT_SETTING_HINTS, refuses_chat_tools


@dataclass(frozen=True)
class ReportLine:
    level: int
    text: str


@dataclass(frozen=True)
class ModelNotice(ReportLine):
    model: str
    unusable: bool
    """Requests to it cannot succeed (retired, or refuses the chat's tools)."""


def provider_report(settings: Settings, *, today: date | None = None) -> list[ReportLine]:
    """The start-up lines about the providers, in priority order, then who can answer."""
    today = today or utc_today()
    lines: list[ReportLine] = []
    can_answer: list[str] = []
    specs = settings.provider_specs()
    for index, spec in enumerate(specs):
        role = "primary" if index == 0 else "fallback"
        if not spec.configured:
            lines.append(ReportLine(logging.WARNING, f"⚪ LLM provider {spec.name} ({role}): not configured, never "
                                                     f"tried: {key_setting(spec)} is not set"))
            continue
        lines.append(ReportLine(logging.INFO, f"🔧 LLM provider {spec.name} ({role}): {spec.base_url}, models "
                                              f"{', '.join(spec.models)}; {key_text(spec)}; {window_text(spec)}"
                                              "not checked yet"))
        notices = model_notices([spec], today=today)
        lines += notices
        unusable = {notice.model for notice in notices if notice.unusable}
        if any(model not in unusable for model in spec.models):
            can_answer.append(spec.name)
    return [*lines, _who_can_answer(specs[0].name, can_answer)]


def model_notices(specs: Sequence[ProviderSpec], *, today: date | None = None) -> list[ModelNotice]:
    """A line per configured model that is retired (ERROR), deprecated (WARNING) or cannot run the chat's tools."""
    today = today or utc_today()
    notices = []
    for spec in specs:
        change = f"change {models_setting(spec.name)}"
        for model in spec.models:
            status = model_status(spec.kind, model, provider=spec.name, today=today)
            if status.lifecycle is Lifecycle.RETIRED:
                notices.append(ModelNotice(logging.ERROR, f"❌ {status.describe(today)} — {change}", model,
                                           unusable=status.rerouted_to is None))
            elif status.lifecycle is Lifecycle.DEPRECATED:
                notices.append(ModelNotice(logging.WARNING, f"⚠️ {status.describe(today)} — {change} before then",
                                           model, unusable=False))
            if refuses_chat_tools(spec.kind, model):
                notices.append(_refuses_tools(status, change))
    return notices


def _refuses_tools(status: ModelStatus, change: str) -> ModelNotice:
    return ModelNotice(logging.ERROR, f"❌ {status.provider} model {status.model} always reasons, and OpenAI refuses "
                                      "tools over Chat Completions while a model reasons: the chat cannot use it — "
                                      f"{change}", status.model, unusable=True)


def _who_can_answer(primary: str, can_answer: list[str]) -> ReportLine:
    if not can_answer:
        return ReportLine(logging.ERROR, "❌ No LLM provider can answer: every chat message gets an apology")
    if primary not in can_answer:
        return ReportLine(logging.WARNING, f"⚠️ The primary, {primary}, cannot answer: "
                                           f"{' → '.join(can_answer)} serve{'s' * (len(can_answer) == 1)} instead")
    if len(can_answer) == 1:
        return ReportLine(logging.WARNING, f"⚠️ No fallback can answer: if {primary} fails, users get an apology")
    return ReportLine(logging.INFO, f"🔧 LLM providers that can answer, in order: {' → '.join(can_answer)}")


def key_setting(spec: ProviderSpec) -> str:
    return spec.setting_hint or DEFAULT_SETTING_HINTS.get(spec.name) or spec.name


def models_setting(provider: str) -> str:
    if provider in ("openai", "ollama"):
        return f"AVAILABLE_PROVIDERS or {provider.upper()}_MODEL_NAME"
    return "AVAILABLE_PROVIDERS"


def key_text(spec: ProviderSpec) -> str:
    if spec.kind == "ollama":
        return "no key needed"
    return f"key set ({key_setting(spec)})" if spec.api_key is not None else "no key"


def window_text(spec: ProviderSpec) -> str:
    """The context windows prompts are fitted to (LLM_CONTEXT_WINDOWS, Ollama's default); none: pydantic-ai's."""
    windows = {model: window for model in spec.models if (window := spec.context_window(model)) is not None}
    if not windows:
        return ""
    if len(set(windows.values())) == 1 and len(windows) == len(spec.models):
        return f"context window {next(iter(windows.values()))} tokens; "
    return "context windows " + ", ".join(f"{model} {window}" for model, window in windows.items()) + " tokens; "


def log_provider_report(settings: Settings, logger: logging.Logger, *, today: date | None = None) -> None:
    for line in provider_report(settings, today=today):
        logger.log(line.level, "%s", line.text)

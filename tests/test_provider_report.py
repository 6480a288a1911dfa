"""What start-up says about the providers: who can answer, keys present (never shown), retired models."""

from __future__ import annotations

import logging
from datetime import date

from luka_bot.core.config import load_settings
from luka_bot.provider_report import model_notices, provider_report

DAY = date(2026, 12, 6)
KEY = "sk-report-SECRET-0123456789"
INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR


def report(**settings: object) -> list[tuple[int, str]]:
    return [(line.level, line.text) for line in provider_report(load_settings(_env_file=None, **settings), today=DAY)]


def test_without_an_openai_key_no_fallback_is_claimed() -> None:
    assert report(OPENAI_API_KEY="") == [
        (INFO, "🔧 LLM provider ollama (primary): http://localhost:11434/v1, models gpt-oss, llama3.2; "
               "no key needed; context window 4096 tokens; not checked yet"),
        (WARNING, "⚪ LLM provider openai (fallback): not configured, never tried: OPENAI_API_KEY is not set"),
        (WARNING, "⚠️ No fallback can answer: if ollama fails, users get an apology"),
    ]


def test_with_a_key_both_can_answer_and_the_key_is_never_shown() -> None:
    lines = report(OPENAI_API_KEY=KEY)
    assert lines[1:] == [
        (INFO, "🔧 LLM provider openai (fallback): https://api.openai.com/v1, models gpt-6.1-terra, gpt-6-luna; "
               "key set (OPENAI_API_KEY); not checked yet"),
        (INFO, "🔧 LLM providers that can answer, in order: ollama → openai"),
    ]
    assert not any(KEY in text or KEY[:10] in text for _, text in lines)


def test_a_retired_model_is_an_error_with_its_replacement_and_a_deprecated_one_a_warning() -> None:
    lines = report(OPENAI_API_KEY=KEY, AVAILABLE_PROVIDERS={"ollama": ["llama3.2"], "openai": ["gpt-4-turbo", "gpt-5"]})
    assert [level for level, _ in lines] == [INFO, INFO, ERROR, WARNING, INFO]
    retired, deprecated = lines[2][1], lines[3][1]
    assert retired.startswith("❌ openai model gpt-4-turbo was retired on 2026-10-23: its requests fail; "
                              "replacement: gpt-5.6-sol (see https://")
    assert retired.endswith(" — change AVAILABLE_PROVIDERS or OPENAI_MODEL_NAME")
    assert deprecated.startswith("⚠️ openai model gpt-5 is deprecated: retirement on 2026-12-11 (in 5 days); "
                                 "replacement: gpt-6.1-sol")
    assert lines[-1] == (INFO, "🔧 LLM providers that can answer, in order: ollama → openai")  # gpt-5 still answers


def test_a_provider_whose_only_model_is_retired_cannot_answer() -> None:
    lines = report(OPENAI_API_KEY=KEY, AVAILABLE_PROVIDERS={"ollama": ["llama3.2"], "openai": ["gpt-4-turbo"]})
    assert lines[-1] == (WARNING, "⚠️ No fallback can answer: if ollama fails, users get an apology")


def test_a_model_that_always_reasons_cannot_run_the_chat() -> None:
    lines = report(OPENAI_API_KEY=KEY, OPENAI_MODEL_NAME="gpt-6.1-sol",
                   AVAILABLE_PROVIDERS={"openai": ["gpt-6.1-sol"], "ollama": ["llama3.2"]})
    assert lines[1] == (ERROR, "❌ openai model gpt-6.1-sol always reasons, and OpenAI refuses tools over Chat "
                               "Completions while a model reasons: the chat cannot use it — change "
                               "AVAILABLE_PROVIDERS or OPENAI_MODEL_NAME")
    assert lines[-1] == (WARNING, "⚠️ The primary, openai, cannot answer: ollama serves instead")


def test_no_provider_that_can_answer_is_an_error() -> None:
    lines = report(AVAILABLE_PROVIDERS={"openai": ["gpt-6-luna"]})
    assert lines[-1] == (ERROR, "❌ No LLM provider can answer: every chat message gets an apology")


def test_an_extra_provider_names_its_key_setting_and_ollama_models_are_never_retired() -> None:
    lines = report(LLM_EXTRA_PROVIDERS={"groq": {"base_url": "http://127.0.0.1:9/v1", "api_key": KEY}},
                   AVAILABLE_PROVIDERS={"ollama": ["gpt-4-turbo"], "groq": ["llama-3.1-8b"]})
    assert lines == [
        (INFO, "🔧 LLM provider ollama (primary): http://localhost:11434/v1, models gpt-4-turbo; no key needed; "
               "context window 4096 tokens; not checked yet"),
        (INFO, "🔧 LLM provider groq (fallback): http://127.0.0.1:9/v1, models llama-3.1-8b; "
               "key set (LLM_EXTRA_PROVIDERS['groq']); not checked yet"),
        (INFO, "🔧 LLM providers that can answer, in order: ollama → groq"),
    ]


def test_model_notices_for_the_cli_cover_every_given_provider() -> None:
    specs = load_settings(_env_file=None, OPENAI_API_KEY=KEY,
                          AVAILABLE_PROVIDERS={"ollama": ["m"], "openai": ["gpt-4-turbo"]}).provider_specs()
    notices = model_notices(specs, today=DAY)
    assert [(n.level, n.model, n.unusable) for n in notices] == [(ERROR, "gpt-4-turbo", True)]


def test_the_context_windows_prompts_are_fitted_to_are_named() -> None:
    lines = report(OPENAI_API_KEY=KEY, LLM_CONTEXT_WINDOWS={"ollama": {"llama3.2": 32768}, "openai": 200_000})
    assert lines[0][1].endswith("no key needed; context windows gpt-oss 4096, llama3.2 32768 tokens; not checked yet")
    assert lines[1][1].endswith("key set (OPENAI_API_KEY); context window 200000 tokens; not checked yet")

"""The deprecation adapter reads pydantic-ai's own data, through its public per-model profile.

Checked against the installed pydantic-ai: known entries of OpenAI's notices, every entry of the
table the profile is built from, a dated deprecation turning into a retirement as days pass.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from plugins.llm_fallback import ProviderSpec
from plugins.llm_fallback.deprecations import Lifecycle, model_status, outdated_models

DAY = date(2026, 12, 6)


def test_a_retired_openai_model_is_retired_with_its_replacement() -> None:
    status = model_status("openai", "gpt-4-turbo", today=DAY)
    assert status.lifecycle is Lifecycle.RETIRED
    assert (status.retirement_date, status.replacement) == (date(2026, 10, 23), "gpt-5.6-sol")
    text = status.describe(DAY)
    assert text.startswith("openai model gpt-4-turbo was retired on 2026-10-23: its requests fail; "
                           "replacement: gpt-5.6-sol (see https://"), text


def test_a_deprecated_model_gives_its_date_and_becomes_retired_on_that_day() -> None:
    before = model_status("openai", "gpt-5", today=DAY)
    assert before.lifecycle is Lifecycle.DEPRECATED
    assert before.retirement_date == date(2026, 12, 11)
    assert "is deprecated: retirement on 2026-12-11 (in 5 days); replacement: gpt-6.1-sol" in before.describe(DAY)
    assert model_status("openai", "gpt-5", today=date(2026, 12, 11)).lifecycle is Lifecycle.RETIRED


@pytest.mark.parametrize(("kind", "model"), [("openai", "gpt-6.1-terra"), ("openai", "my-own-finetune"),
                                             ("ollama", "llama3.2"), ("ollama", "gpt-4-turbo")])
def test_models_without_a_notice_are_current(kind: str, model: str) -> None:
    """Ollama models are the operator's own: never retired by a vendor, whatever their name."""
    status = model_status(kind, model, today=DAY)
    assert status.lifecycle is Lifecycle.CURRENT and status.current
    assert status.describe(DAY) == f"{kind} model {model} is current"


def test_the_provider_name_is_used_in_texts() -> None:
    assert model_status("openai", "gpt-4-turbo", provider="gateway", today=DAY).describe(DAY).startswith(
        "gateway model gpt-4-turbo")


def test_every_entry_of_pydantic_ais_openai_table_is_seen_through_the_public_profile() -> None:
    """The adapter uses `OpenAIProvider.model_profile()`; this holds it to the table behind it (a
    pydantic-ai upgrade that moves the data elsewhere fails here, not silently in production)."""
    from pydantic_ai.providers._model_deprecations import OPENAI_MODEL_DEPRECATIONS

    assert len(OPENAI_MODEL_DEPRECATIONS) > 50
    for model, deprecation in OPENAI_MODEL_DEPRECATIONS.items():
        status = model_status("openai", model, today=DAY)
        assert not status.current, model
        assert (status.retirement_date, status.replacement, status.rerouted_to, status.source_url) == (
            deprecation.retirement_date, deprecation.replacement, deprecation.rerouted_to, deprecation.source_url)
        past = deprecation.retirement_date is not None and deprecation.retirement_date <= DAY
        assert status.lifecycle is (Lifecycle.RETIRED if past else Lifecycle.DEPRECATED), model


def test_outdated_models_lists_only_retired_and_deprecated_ones_in_order() -> None:
    specs = [ProviderSpec("ollama", "ollama", "http://127.0.0.1:9/v1", ("gpt-4-turbo", "llama3.2")),
             ProviderSpec("openai", "openai", "https://api.openai.com/v1", ("gpt-6-luna", "gpt-5", "gpt-4-turbo"))]
    found = outdated_models(specs, today=DAY)
    assert [(s.provider, s.model, s.lifecycle) for s in found] == [
        ("openai", "gpt-5", Lifecycle.DEPRECATED), ("openai", "gpt-4-turbo", Lifecycle.RETIRED)]
    assert outdated_models(specs, today=DAY - timedelta(days=3650)) == [
        model_status("openai", "gpt-5", today=DAY - timedelta(days=3650)),
        model_status("openai", "gpt-4-turbo", today=DAY - timedelta(days=3650))]

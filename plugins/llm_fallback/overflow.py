"""A prompt longer than a model's context window: how providers say so, and what they say about it.

OpenAI and OpenAI-compatible servers refuse such a prompt with HTTP 400; pydantic-ai raises
`ModelContextWindowExceededError` for OpenAI's `context_length_exceeded` and vLLM's wording, but
not for llama.cpp's server (`exceed_context_size_error`) nor LM Studio ("greater than the context
length"): those are recognised here by code, else by wording. Every one of them states the window
and the prompt's size in its own tokens, which is what a refit needs (`fit.py`). Ollama says
nothing: it cuts the prompt from the front at its `num_ctx`, so the bot fits before sending.
`errors.classify` decides what an overflow means; this module only reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic_ai.exceptions import ModelAPIError, ModelContextWindowExceededError, ModelHTTPError


@dataclass(frozen=True, slots=True)
class Overflow:
    """What a provider said when it refused a prompt as too long; counts in its own tokens, None if not said."""

    window: int | None = None
    prompt_tokens: int | None = None


class PromptTooLong(ModelContextWindowExceededError):
    """The prompt does not fit a model's context window even with no history left: only a shorter message fits.

    Raised by an attempt before sending (the window is known) or after the provider refused the smallest fit.
    `limit_chars`: how many characters the new message could have had for this model (None: unknown).
    """

    def __init__(self, model_name: str, message: str, *, limit_chars: int | None = None):
        super().__init__(model_name, message)
        self.limit_chars = limit_chars


CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error", "model_context_window_exceeded"})
"""Error codes / types of a prompt beyond the context window: OpenAI's, llama.cpp server's, and others'."""
_CONTEXT_WORDS = re.compile(r"context (?:length|size|window)|maximum context|n_ctx", re.IGNORECASE)
"""How servers without such a code word it: LM Studio ("greater than the context length (n_keep: M >= n_ctx:
N)"), vLLM and others ("maximum context length is N tokens")."""
_WINDOW = re.compile(r"\b(?:n_ctx\W{1,4}|maximum context length is |context size \(|context length of only )(\d+)",
                     re.IGNORECASE)
_PROMPT = re.compile(r"\b(?:n_prompt_tokens\W{1,4}|n_keep\W{1,4}|resulted in |request \(|has |you requested |"
                     r"keep the first )(\d+)", re.IGNORECASE)


def stated_overflow(error: BaseException) -> Overflow | None:
    """What the provider said, if `error` is its refusal of a prompt longer than its context window; else None."""
    if isinstance(error, PromptTooLong) or not isinstance(error, ModelAPIError):
        return None
    text = f"{error.body} {error.message}"
    if not isinstance(error, ModelContextWindowExceededError):
        if not isinstance(error, ModelHTTPError) or error.status_code not in (400, 413):
            return None
        codes = {str(error.provider_error_code), str(error.provider_error_type)}
        if not codes & CONTEXT_CODES and not _CONTEXT_WORDS.search(text):
            return None
    window, prompt = _WINDOW.search(text), _PROMPT.search(text)
    return Overflow(int(window.group(1)) if window else None, int(prompt.group(1)) if prompt else None)

"""Fit one request into one model's context window: the oldest turns go first.

Each attempt fits the request to its own model's window (`Model.context_window`, from the model's
profile: `ProviderSpec.context_windows` for local servers, pydantic-ai's figures for known models),
so a request that falls back from a large window to a small one is fitted again. The system
prompt, the instructions, the tools and the current turn (the user's new message and whatever the
agent did with it so far) are always kept; older turns are left out, oldest first, whole (a tool
call never loses its result). A model whose window is unknown gets the request as it is, until its
server says the prompt is too long: then `refit` fits it to the window the server named.

Why not pydantic-ai's history processors (`Agent(history_processors=…)`, the `ProcessHistory`
capability): they run once per agent step against the run's model, and the fallback model has one
window for all its providers (`FallbackModel.context_window`: the smallest), while each provider
must get as much history as its own window takes. `fit_history` has a history processor's shape
(messages in, messages out), so an agent with a single model can use it as one.

Tokens are estimated, not counted: one per 3 UTF-8 bytes. Against real tokenizers (OpenAI's
cl100k and o200k, DeepSeek's, Claude's; `benchmarks/token_estimate.py`) that is more than they
count for prose and code, English or Russian (0.39–0.81 of the estimate) and Chinese (0.5–0.94),
and a little less for a model's Markdown answers full of code (1.15) and emoji-dense chat (up to
1.17): `MARGIN` and the answer's reserve (a quarter of a small window) hold up to ~1.4. A
tokenizer would be the wrong one for most local models anyway, and costs ~100× the CPU
(tiktoken: 0.8–1.3 ms per 20,000 characters against 9 µs; its encodings are also downloaded on
first use). One whole fit of a 19-message thread costs ~25 µs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from pydantic_ai.messages import ModelMessage, ModelRequest, SystemPromptPart, UserPromptPart
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.settings import ModelSettings

from .overflow import Overflow, PromptTooLong

BYTES_PER_TOKEN = 3
MARGIN = 0.9
"""The share of a window (less the answer's reserve) that a fitted prompt may fill by the estimate."""
ANSWER_RESERVE = 1024
"""Tokens kept free for the answer when the request sets no `max_tokens` (at most a quarter of the window):
Ollama's `num_ctx` and OpenAI's window both hold the prompt and the answer together."""
MESSAGE_TOKENS = 4
"""What a message costs besides its text (role, separators)."""
MEDIA_TOKENS = 1000
"""An image or file in a message: a rough, generous figure."""


def estimate_tokens(text: str) -> int:
    return len(text.encode()) // BYTES_PER_TOKEN + 1


def prompt_limit(window: int, settings: ModelSettings | None = None) -> int:
    """Estimated tokens a prompt may have in `window`, leaving room for the answer."""
    answer = (settings or {}).get("max_tokens") or ANSWER_RESERVE
    return int((window - min(answer, window // 4)) * MARGIN)


def fit_history(messages: list[ModelMessage], limit: int,
                params: ModelRequestParameters | None = None) -> list[ModelMessage]:
    """`messages` without their oldest turns, so that the estimate stays within `limit` tokens.

    Raises `PromptTooLong` when the current turn alone (with the system prompt and tools) is over it.
    """
    return HistoryFit(messages, params or ModelRequestParameters(), None).fit(limit)


class HistoryFit:
    """One attempt's request, fitted to its model's window; `refit` fits it smaller after the server refused it."""

    def __init__(self, messages: list[ModelMessage], params: ModelRequestParameters, window: int | None,
                 settings: ModelSettings | None = None, *, model_name: str = "model"):
        self.messages = messages
        self.params = params
        self.settings = settings
        self.model_name = model_name
        self.limit: int | None = prompt_limit(window, settings) if window is not None else None
        self.sent_tokens: int | None = None
        """The estimate of what the last fit kept (None: sent as it was, unfitted)."""
        self.dropped = 0
        """Older turns the last fit left out."""
        self._turns: tuple[list[list[ModelMessage]], list[ModelMessage]] | None = None
        self._costs: tuple[int, list[int]] | None = None

    def first(self) -> list[ModelMessage]:
        """The messages for the first try: fitted when the window is known, else as they are."""
        return self.messages if self.limit is None else self.fit(self.limit)

    def refit(self, overflow: Overflow) -> list[ModelMessage]:
        """Fewer turns, after the server refused the last try as too long (`overflow`: what it said)."""
        fixed, turns = self._turn_costs()
        sent = self.sent_tokens if self.sent_tokens is not None else fixed + sum(turns)
        if overflow.window is None:  # no window named: halve, and the limit stays unknown
            limit, known = sent // 2, False
        else:  # the server's window in the estimate's units, scaled by how it counted this very prompt
            scale = sent / overflow.prompt_tokens if overflow.prompt_tokens else 1.0
            limit, known = min(prompt_limit(int(overflow.window * scale), self.settings), sent - 1), True
        return self.fit(limit, limit_known=known)

    def fit(self, limit: int, *, limit_known: bool = True) -> list[ModelMessage]:
        """The newest turns whose estimate, with what is always sent, stays within `limit` tokens."""
        fixed, turns = self._turn_costs()
        if fixed > limit:
            raise self._too_long(limit if limit_known else None)
        total, kept = fixed, 0
        for cost in reversed(turns):
            if total + cost > limit:
                break
            total, kept = total + cost, kept + 1
        self.limit, self.sent_tokens, self.dropped = limit, total, len(turns) - kept
        if kept == len(turns):
            return self.messages
        history, current = self._split()
        dropped = history[:self.dropped]
        messages = [m for turn in history[self.dropped:] for m in turn] + current
        return _with_system_parts(messages, [p for turn in dropped for p in _system_parts(turn)])

    def _split(self) -> tuple[list[list[ModelMessage]], list[ModelMessage]]:
        if self._turns is None:
            self._turns = _split_turns(self.messages)
        return self._turns

    def _turn_costs(self) -> tuple[int, list[int]]:
        """(what is always sent, each older turn without its system prompt parts), in estimated tokens."""
        if self._costs is None:
            history, current = self._split()
            system = [[estimate_tokens(p.content) for p in _system_parts(turn)] for turn in history]
            fixed = (sum(map(_message_tokens, current)) + _tools_tokens(self.params) + _instructions_tokens(current)
                     + sum(map(sum, system)))
            self._costs = fixed, [sum(map(_message_tokens, turn)) - sum(s) for turn, s in zip(history, system,
                                                                                                 strict=True)]
        return self._costs

    def _too_long(self, limit: int | None) -> PromptTooLong:
        fixed, _ = self._turn_costs()
        text = _new_message_text(self._split()[1])
        limit_chars = None
        if limit is not None:  # the characters of this message's language that would fit beside the rest
            room = max(0, limit - (fixed - estimate_tokens(text)))
            limit_chars = int(room * BYTES_PER_TOKEN * len(text) / len(text.encode())) if text else room
        return PromptTooLong(self.model_name, f"the prompt needs about {fixed} tokens even without history; this "
                                              f"model takes {limit if limit is not None else 'fewer'}",
                             limit_chars=limit_chars)


def _split_turns(messages: Sequence[ModelMessage]) -> tuple[list[list[ModelMessage]], list[ModelMessage]]:
    """(older turns, the current turn): a turn opens with a user prompt; what comes before the first, joins it."""
    starts = [i for i, m in enumerate(messages)
              if isinstance(m, ModelRequest) and any(isinstance(p, UserPromptPart) for p in m.parts)]
    if not starts:
        return [], list(messages)
    bounds = [0, *starts[1:-1], starts[-1]]
    history = [list(messages[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if a < b]
    return history, list(messages[starts[-1]:])


def _system_parts(turn: list[ModelMessage]) -> list[SystemPromptPart]:
    return [p for m in turn if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, SystemPromptPart)]


def _with_system_parts(messages: list[ModelMessage], system: list[SystemPromptPart]) -> list[ModelMessage]:
    """The kept messages, led by the system prompt parts of the turns left out."""
    if not system:
        return messages
    first = messages[0]
    if isinstance(first, ModelRequest):
        return [replace(first, parts=[*system, *first.parts]), *messages[1:]]
    return [ModelRequest(parts=list(system)), *messages]


def _message_tokens(message: ModelMessage) -> int:
    return MESSAGE_TOKENS + sum(_part_tokens(part) for part in message.parts)


def _part_tokens(part: object) -> int:
    content = getattr(part, "content", None)
    if isinstance(content, str):
        return estimate_tokens(content)
    if isinstance(content, list | tuple):
        return sum(estimate_tokens(item) if isinstance(item, str) else MEDIA_TOKENS for item in content)
    args = getattr(part, "args_as_json_str", None)
    if callable(args):  # a tool call
        return estimate_tokens(args()) + estimate_tokens(str(getattr(part, "tool_name", "")))
    if content is None:
        return 0
    try:
        return estimate_tokens(json.dumps(content, default=str, ensure_ascii=False))
    except (TypeError, ValueError):
        return estimate_tokens(str(content))


def _tools_tokens(params: ModelRequestParameters) -> int:
    tools = [*params.function_tools, *params.output_tools]
    return sum(estimate_tokens(json.dumps(t.parameters_json_schema, ensure_ascii=False))
               + estimate_tokens(f"{t.name} {t.description or ''}") + MESSAGE_TOKENS for t in tools)


def _instructions_tokens(current: list[ModelMessage]) -> int:
    """The instructions go with the last request (a model reads only those)."""
    last = next((m for m in reversed(current) if isinstance(m, ModelRequest)), None)
    return estimate_tokens(last.instructions) if last is not None and last.instructions else 0


def _new_message_text(current: list[ModelMessage]) -> str:
    """The text of the user's new message (the current turn's user prompt)."""
    first = current[0] if current else None
    parts = first.parts if isinstance(first, ModelRequest) else []
    return "".join(p.content if isinstance(p.content, str) else "".join(c for c in p.content if isinstance(c, str))
                   for p in parts if isinstance(p, UserPromptPart))

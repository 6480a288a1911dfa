"""What a failed attempt means: fall back or not, cool the provider down or not.

One table, one function (`classify`): the only place where failover is decided. Every attempt's
outcome goes through it; `plan.Plan.failed` applies the `Verdict` (`Blame`) to the provider's
health, and the model only reads `Verdict.fall_back`. `tests/test_classification_http.py` pins
the table down over real HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic_ai.exceptions import (
    ContentFilterError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelEmptyResponseError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelRequestRejectedError,
    ModelRequestTimeout,
    ModelServerError,
    ModelTimeoutError,
    ModelUnavailableError,
    UnexpectedModelBehavior,
)

from .overflow import Overflow, PromptTooLong, stated_overflow


class FailureKind(StrEnum):
    """Why an attempt failed, as an operator reads it in logs and `/llm_status`."""

    CONNECTION = "connection"
    TIMEOUT = "timeout"
    SERVER = "server_error"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    MODEL_MISSING = "model_not_found"
    MALFORMED = "malformed_response"
    STREAM_CUT = "stream_cut"
    EMPTY = "empty_reply"
    REQUEST = "bad_request"
    CONTEXT_WINDOW = "context_window"
    REFUSED = "content_filter"
    UNKNOWN = "unknown"


class Blame(StrEnum):
    """What a failed attempt costs the provider (applied by `plan.Plan.failed`, decided here only)."""

    NONE = "none"
    """Nobody's fault: the request, the caller, a twin that won, or this process's own lag."""
    COOLDOWN = "cooldown"
    """The provider cools down (skipped by every process until its cooldown ends)."""
    MODEL = "model"
    """Only that model cools down (it does not exist there): the provider's next model is tried."""
    STRIKE = "strike"
    """A bad reply: that request falls back; `STRIKES_TO_COOL` in one window cool the provider."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one failed attempt."""

    kind: FailureKind
    fall_back: bool
    """Try the next model / provider with the same request (else the error goes to the caller)."""
    blame: Blame
    retry_after: float | None = None
    """Seconds the provider asked for (HTTP 429 `Retry-After`), if any."""
    excused: bool = False
    """A timeout that this process's event-loop lag explains: no blame, though the provider's would be."""
    overflow: Overflow | None = None
    """The provider refused the prompt as longer than its context window: the attempt sends it again with
    fewer of the oldest turns (`fit.py`), then the request goes on to the next model / provider."""


RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Statuses below 500 that the providers document as retryable (openai-python retries 408, 409,
429 and 5xx; Ollama answers 5xx for its own failures): they fall back and cool down."""

TIMEOUTS = (ModelTimeoutError, ModelRequestTimeout)
"""Errors that mean "no answer in time" (a lagging event loop may explain them)."""


class EmptyReply(Exception):
    """A provider answered 200 with nothing in it (no text, no tool call)."""


def classify(error: BaseException, *, after_first_event: bool = False, lag_excused: bool = False) -> Verdict:
    """What one attempt's exception means: the whole table of DESIGN.md, "Error classification".

    `after_first_event`: the error came after a stream handed out its first event; half the
    answer is out, so the model cannot fall back by itself: a transport/provider error
    (`ModelAPIError`) is a cut that cools the provider (the caller may restart the reply),
    anything else (the consumer's own error, output validation) blames nobody.
    `lag_excused`: this process's event loop lagged through most of the attempt, which explains
    a timeout: the request falls back, nobody is blamed.
    """
    verdict = _verdict(error, after_first_event)
    if lag_excused and isinstance(error, TIMEOUTS) and verdict.blame is Blame.COOLDOWN:
        return Verdict(verdict.kind, verdict.fall_back, Blame.NONE, excused=True)
    return verdict


def _verdict(error: BaseException, after_first_event: bool) -> Verdict:
    if after_first_event:
        if isinstance(error, EmptyReply):  # a stream whose chunks held nothing: the agent asks again
            return Verdict(FailureKind.EMPTY, fall_back=False, blame=Blame.STRIKE)
        if isinstance(error, ModelAPIError):
            return Verdict(FailureKind.STREAM_CUT, fall_back=False, blame=Blame.COOLDOWN)
        return Verdict(FailureKind.UNKNOWN, fall_back=False, blame=Blame.NONE)
    if isinstance(error, ContentFilterError) or _is_content_filter(error):
        return Verdict(FailureKind.REFUSED, fall_back=False, blame=Blame.NONE)
    if isinstance(error, ModelNotFoundError):
        return Verdict(FailureKind.MODEL_MISSING, fall_back=True, blame=Blame.MODEL)
    if isinstance(error, ModelAuthenticationError):
        return Verdict(FailureKind.AUTH, fall_back=True, blame=Blame.COOLDOWN)
    if isinstance(error, ModelRateLimitError):
        return Verdict(FailureKind.RATE_LIMITED, fall_back=True, blame=Blame.COOLDOWN, retry_after=error.retry_after)
    if isinstance(error, PromptTooLong):  # nothing left to leave out: a model with a larger window may take it
        return Verdict(FailureKind.CONTEXT_WINDOW, fall_back=True, blame=Blame.NONE)
    if (overflow := stated_overflow(error)) is not None:  # not an outage: less history, then a larger window
        return Verdict(FailureKind.CONTEXT_WINDOW, fall_back=True, blame=Blame.NONE, overflow=overflow)
    if isinstance(error, ModelRequestRejectedError):  # maybe only this provider's (a model without tools)
        return Verdict(FailureKind.REQUEST, fall_back=True, blame=Blame.NONE)
    if isinstance(error, EmptyReply | ModelEmptyResponseError):
        return Verdict(FailureKind.EMPTY, fall_back=True, blame=Blame.STRIKE)
    if isinstance(error, TIMEOUTS):
        return Verdict(FailureKind.TIMEOUT, fall_back=True, blame=Blame.COOLDOWN)
    if isinstance(error, ModelConnectionError):
        return Verdict(FailureKind.CONNECTION, fall_back=True, blame=Blame.COOLDOWN)
    if isinstance(error, ModelServerError | ModelUnavailableError | ModelQuotaExceededError):
        return Verdict(FailureKind.SERVER, fall_back=True, blame=Blame.COOLDOWN)
    if isinstance(error, ModelHTTPError):
        if error.status_code == 408:
            return Verdict(FailureKind.TIMEOUT, fall_back=True, blame=Blame.COOLDOWN)
        if error.status_code in RETRYABLE_STATUS or error.status_code >= 500:
            return Verdict(FailureKind.SERVER, fall_back=True, blame=Blame.COOLDOWN)
        return Verdict(FailureKind.REQUEST, fall_back=True, blame=Blame.NONE)
    if isinstance(error, ModelAPIError):
        # Uncategorised provider errors; pydantic-ai reports an undecodable body this way.
        kind = FailureKind.MALFORMED if "decode" in str(error).lower() else FailureKind.SERVER
        return Verdict(kind, fall_back=True, blame=Blame.COOLDOWN)
    if isinstance(error, UnexpectedModelBehavior):
        return Verdict(FailureKind.MALFORMED, fall_back=True, blame=Blame.COOLDOWN)
    # Anything else is not a provider's answer (a bug, a tool's error): surface it, blame nobody.
    return Verdict(FailureKind.UNKNOWN, fall_back=False, blame=Blame.NONE)


def surfaced(error: Exception, verdict: Verdict) -> Exception:
    """What a request that does not fall back raises: a provider's refusal as pydantic-ai's
    `ContentFilterError` whatever it came as (Azure's HTTP 400 with code content_filter), so the
    caller tells a refusal from a failure; anything else as it came."""
    if verdict.kind is FailureKind.REFUSED and not isinstance(error, ContentFilterError):
        status = f" (HTTP {error.status_code})" if isinstance(error, ModelHTTPError) else ""
        refusal = ContentFilterError(f"the provider's content filter refused the request{status}")
        refusal.__cause__ = error
        return refusal
    return error


def _is_content_filter(error: BaseException) -> bool:
    return isinstance(error, ModelAPIError) and error.provider_error_code == "content_filter"


# --- the error a caller sees when nothing worked ---------------------------------------------


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """One provider/model tried for one request, and how it failed."""

    provider: str
    model: str
    kind: FailureKind
    error: str
    """Short, redacted description."""
    limit_chars: int | None = None
    """For a prompt too long for this model even without history: the most characters its new message could have."""

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}: {self.kind.value} ({self.error})"


class AllProvidersFailedError(RuntimeError):
    """Every provider (and every model of each) failed for this request.

    A `RuntimeError`, as the seed promises; `attempts` lists each try in order. The text is
    redacted: it may be logged or shown to an admin.
    """

    def __init__(self, attempts: Sequence[FailedAttempt]):
        self.attempts = list(attempts)
        tried = "; ".join(str(a) for a in self.attempts) or "no provider is configured"
        super().__init__(f"All LLM providers failed: {tried}")


class PromptTooLongError(AllProvidersFailedError):
    """The prompt fits no provider's context window, even with no history left: only a shorter message can help.

    Not an outage: nobody cools down and no admin is alerted. `limit_chars`: the most characters the new
    message could have for the provider that takes the most (None: no provider said how many).
    """

    def __init__(self, attempts: Sequence[FailedAttempt]):
        super().__init__(attempts)
        self.limit_chars = max((a.limit_chars for a in self.attempts if a.limit_chars is not None), default=None)
        limit = f"at most about {self.limit_chars} characters" if self.limit_chars is not None else "limit unknown"
        self.args = (f"The prompt is too long for every provider's context window ({limit}): "
                     + "; ".join(str(a) for a in self.attempts),)


class StreamCutError(RuntimeError):
    """A streamed answer broke off after its first event (cut, or ended without a finish reason).

    Half an answer was already handed out, so the model cannot fall back by itself: the provider
    is recorded as failed (it cools down) and this is raised. A caller that has shown nothing
    final yet (a draft) may restart the whole request: the next plan skips the failed provider.
    """

    def __init__(self, provider: str, model: str, error: str):
        self.provider = provider
        self.model = model
        self.error = error
        super().__init__(f"stream from {provider}/{model} broke off: {error}")

    @property
    def attempt(self) -> FailedAttempt:
        return FailedAttempt(self.provider, self.model, FailureKind.STREAM_CUT, self.error)

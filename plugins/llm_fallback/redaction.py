"""What an attempt's error says, in one line an admin can read, and never a secret.

Every text that leaves the fallback layer (log lines, alerts, `/llm_status`, exceptions) goes
through `redact`; `describe` makes an attempt's error that text.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterable

from pydantic_ai.exceptions import ModelAPIError, ModelConnectionError, ModelHTTPError, UnexpectedModelBehavior

_SECRET_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-*.]{6,}"),  # OpenAI-style keys, also the masked "sk-te*****cret." echo
    re.compile(r"\b\d{6,12}:[A-Za-z0-9_-]{30,}\b"),  # Telegram bot tokens
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)(api[_-]?key[\"'=:\s]+)[A-Za-z0-9._\-]{8,}"),
)
REDACTED = "[REDACTED]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove secrets from a text meant for logs, status output or exceptions."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


def describe(error: BaseException, *, secrets: Iterable[str] = (), limit: int = 160) -> str:
    """A short, redacted, one-line description of an attempt's error."""
    if isinstance(error, ModelHTTPError):
        text = f"HTTP {error.status_code}: {_http_detail(error)}"
    elif isinstance(error, ModelAPIError | UnexpectedModelBehavior):
        text = _message(error)
    else:
        text = f"{type(error).__name__}: {error}"
    text = redact(" ".join(text.split()), secrets)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _http_detail(error: ModelHTTPError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    if isinstance(body, str) and body:
        return body
    return type(error).__name__


def _message(error: BaseException) -> str:
    if isinstance(error, ModelConnectionError) and (reason := _network_reason(error)):
        return reason
    return str(getattr(error, "message", None) or str(error) or type(error).__name__)


_NETWORK_REASONS = ((ConnectionRefusedError, "Connection refused"), (ConnectionResetError, "Connection reset"),
                    (socket.gaierror, "Host not found"), (TimeoutError, "Connection timed out"))


def _network_reason(error: BaseException) -> str | None:
    """What the network said, from the root of the exception chain ("Connection refused"), if it says."""
    seen: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in seen:
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    root = seen[-1]
    if isinstance(root, asyncio.CancelledError):  # a deadline's cancel scope: the message says it all
        return None
    for kind, reason in _NETWORK_REASONS:
        if isinstance(root, kind):
            return reason
    return f"{getattr(error, 'message', None) or error} ({type(root).__name__}: {root})" if root is not error else None

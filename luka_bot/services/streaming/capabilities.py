"""What this Bot API server accepts for showing a reply while it is generated, per chat type.

Decided once and remembered for the process (one `Bot`, so one server): private chats start
with drafts (`sendMessageDraft`), other chats with edits of one message. A refusal moves that
chat type one step down — draft → edit → none (typing, then one final message) — with one log
line; it never fails a reply. After a restart the process learns it again (one refused call).

An answer that is not the Bot API's at all (an HTML error page, JSON of another shape: a proxy
or an emulator without that method) is a refusal too: the method is not offered there.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from aiogram.exceptions import ClientDecodeError, TelegramAPIError, TelegramBadRequest, TelegramNotFound

logger = logging.getLogger(__name__)


class PreviewMode(StrEnum):
    DRAFT = "draft"
    EDIT = "edit"
    NONE = "none"


_NEXT = {PreviewMode.DRAFT: PreviewMode.EDIT, PreviewMode.EDIT: PreviewMode.NONE, PreviewMode.NONE: PreviewMode.NONE}
_METHOD = {PreviewMode.DRAFT: "sendMessageDraft", PreviewMode.EDIT: "editMessageText"}
# Bad requests about this one chat or message, not about the method: they change nothing.
_NOT_A_REFUSAL = ("message is not modified", "chat not found", "message to edit not found")
SNIPPET = 80
"""Characters of a non-Bot-API answer quoted in the log line."""

FrameError = TelegramAPIError | ClientDecodeError
"""What showing a frame may raise: Telegram's error, or an answer that is not the Bot API's."""


def is_refusal(error: FrameError) -> bool:
    """The server does not offer the method here (unknown method, not allowed in this chat mode)."""
    if isinstance(error, TelegramNotFound | ClientDecodeError):
        return True
    return isinstance(error, TelegramBadRequest) and not any(text in error.message for text in _NOT_A_REFUSAL)


def describe(error: FrameError) -> str:
    """One line: Telegram's description, or the start of an answer that is not the Bot API's."""
    if isinstance(error, ClientDecodeError):
        return f"not a Bot API answer: {' '.join(str(error.data).split())[:SNIPPET]!r}"
    return error.message


class StreamCapabilities:
    def __init__(self) -> None:
        self._modes: dict[str, PreviewMode] = {}

    def mode_for(self, chat_type: str) -> PreviewMode:
        default = PreviewMode.DRAFT if chat_type == "private" else PreviewMode.EDIT
        return self._modes.get(chat_type, default)

    def refused(self, chat_type: str, mode: PreviewMode, error: FrameError) -> PreviewMode:
        """`mode` was refused in a `chat_type` chat: remember the next mode down and return it."""
        current = self.mode_for(chat_type)
        if current != mode:  # another reply learnt it first
            return current
        self._modes[chat_type] = lower = _NEXT[mode]
        instead = "one final message after typing" if lower is PreviewMode.NONE else "edits of one message"
        logger.warning("📝 %s refused in %s chats (%s): streamed replies use %s from now on",
                       _METHOD.get(mode, mode), chat_type, describe(error), instead)
        return lower

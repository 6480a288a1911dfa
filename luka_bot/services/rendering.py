"""The model's Markdown as Telegram formatting: text plus entities, and plain text when Telegram refuses them.

`render_markdown` turns what a model writes (CommonMark with GitHub's tables, strikethrough and
task lists) into text + `MessageEntity` objects with `telegramify-markdown`: **bold**, lists,
code blocks with their language, links, tables (as a monospaced block), quotes. Text that is
not finished yet renders too (`render_draft`): an unclosed code fence is a code block up to the
end, and the paragraph being written gets its open `**` or backtick closed for the frame, so a
phrase is bold while it streams, as it will be in the final message.

Telegram gets no parse mode, so it parses nothing; what it may still refuse is an entity
itself (a link address it does not accept, say). `Formatting.send` then sends the same text
plain — link addresses written out — logs one line, and sends the rest of that reply plain.
Thread names, notices and the bot's own texts stay plain (`Rendered(text)`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import pyromark
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import MessageEntity
from telegramify_markdown import RenderConfig, convert
from telegramify_markdown.converter import STANDARD_OPTIONS

from .message_text import TELEGRAM_LIMIT, Rendered

logger = logging.getLogger(__name__)

T = TypeVar("T")
Send = Callable[[str, list[MessageEntity] | None], Awaitable[T]]

_CONFIG = RenderConfig.isolated()
for _level in range(1, 7):  # headings are bold (and underlined for the top two), without an emoji in front
    setattr(_CONFIG.markdown_symbol, f"heading_level_{_level}", "")
# An HTML tag outside code: CommonMark would pass it through as HTML, which Telegram can't show.
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_CODE_SPAN = re.compile(r"`[^`]*`")
_LINK_SCHEMES = frozenset({"http", "https", "tg"})
# Copying a validated entity costs a tenth of validating a new one (aiogram's models validate).
_ENTITY = MessageEntity(type="bold", offset=0, length=1)


def render_markdown(markdown: str) -> Rendered:
    """Telegram text + entities for the model's (possibly half-written) Markdown."""
    text, entities = convert(_literal_html(markdown), config=_CONFIG)
    if not text.strip():  # nothing left to show (an opened fence, a lone tag): show what was written
        return Rendered(markdown.strip())
    return Rendered(text, tuple(
        _ENTITY.model_copy(update={"type": e.type, "offset": e.offset, "length": e.length, "url": e.url,
                                   "language": e.language})
        for e in entities if e.length > 0 and (e.type != "text_link" or _linkable(e.url)))).rstrip()


def render_draft(markdown: str) -> Rendered:
    """A frame of a reply still being written: `render_markdown` with the last paragraph's markup closed."""
    return render_markdown(close_open_markup(markdown))


def recent_blocks(markdown: str, keep: int = 3 * TELEGRAM_LIMIT) -> str:
    """The end of a long text, from a paragraph break outside code blocks, at least `keep` characters long.

    A frame shows only the last message's worth of a reply: rendering just its end keeps the cost
    of a frame bounded (about 5 ms) however long the reply grows; rendering is linear in the text.
    Up to `keep` characters the frame is exactly the last message the final split will send.
    """
    cut = markdown.rfind("\n\n", 0, len(markdown) - keep) if len(markdown) > keep else -1
    # Not inside a code block, and before a block that starts at the margin (not a list's continuation).
    while cut > 0 and (markdown.count("```", 0, cut) % 2 or markdown[cut + 2:cut + 3] in (" ", "\t", "\n")):
        cut = markdown.rfind("\n\n", 0, cut)
    return markdown[cut + 2:] if cut > 0 else markdown


def close_open_markup(markdown: str) -> str:
    """Close the backtick and the `**` that the paragraph being written left open (outside code blocks).

    A `**` glued to a word before it (`2**3`) is not taken for an opener: it may be an exponent.
    """
    if markdown.count("```") % 2:  # inside a code fence: CommonMark already shows it as code to the end
        return markdown
    text = markdown.rstrip()
    fence = text.rfind("```")
    paragraph = text[max(text.rfind("\n\n") + 1, fence + 3 if fence >= 0 else 0):]  # after the last code block
    if paragraph.count("`") % 2:
        if text.endswith("`"):  # just opened: nothing to show in it yet
            return text[:-1]
        text, paragraph = text + "`", paragraph + "`"
    outside_code = _CODE_SPAN.sub("", paragraph)
    if outside_code.count("**") % 2:
        if text.endswith("**"):
            return text[:-2]
        opener = outside_code.rfind("**")
        if opener == 0 or not outside_code[opener - 1].isalnum():
            text += "**"
    return text


def _literal_html(markdown: str) -> str:
    """Escape `<` that would start an HTML tag outside code, so `<div>` is shown, not dropped."""
    if not _TAG_START.search(markdown):
        return markdown
    data = markdown.encode()
    parts, at = [], 0
    for event, span in pyromark.events_with_range(markdown, options=STANDARD_OPTIONS):
        if isinstance(event, dict) and ("Code" in event or "CodeBlock" in str(event.get("Start", ""))):
            parts += [_TAG_START.sub(r"\\<", data[at:span["start"]].decode()), data[span["start"]:span["end"]].decode()]
            at = span["end"]
    parts.append(_TAG_START.sub(r"\\<", data[at:].decode()))
    return "".join(parts)


def _linkable(url: str | None) -> bool:
    """A link address Telegram takes: http(s) to a host name, or tg://. Others stay as the link's text."""
    if not url:
        return False
    parts = urlsplit(url)
    return parts.scheme in _LINK_SCHEMES and (parts.scheme == "tg" or "." in parts.netloc)


def entities_refused(error: Exception) -> bool:
    """Telegram refused the formatting, not the message ("can't parse entities", "entity beginning at …")."""
    return isinstance(error, TelegramBadRequest) and "entit" in error.message.lower()


class Formatting:
    """Sends text with its entities while Telegram takes them; after one refusal, the rest of the reply plain.

    One per reply, shared by its draft frames and its final messages: one log line per reply,
    and the final message looks like the frames before it.
    """

    def __init__(self) -> None:
        self.refused = False

    async def send(self, send: Send[T], message: Rendered) -> T:
        """`send(text, entities)`, once; again with the plain text if Telegram refuses the entities."""
        if self.refused or not message.entities:
            return await send(message.plain(), None)
        try:
            return await send(message.text, list(message.entities))
        except TelegramBadRequest as error:
            if not entities_refused(error):
                raise
            self.refused = True
            logger.warning("📝 Telegram refused the formatting (%s): this reply goes as plain text", error.message)
            return await send(message.plain(), None)

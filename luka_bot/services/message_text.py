"""Text as Telegram messages: a text with its formatting (`Rendered`), split at Telegram's limit.

Formatting travels as `MessageEntity` objects, never as a parse mode: Telegram then has nothing
to parse, so no character of the model's text can make it refuse a message. Entity offsets and
lengths count UTF-16 code units (an emoji outside the BMP counts two), as Telegram does.

Splitting (`split_rendered`) cuts where the text breaks anyway — a blank line, a line end, a
space, in that order — never inside an entity when it can help it: a code block that fits in
one message goes whole to the next one; one longer than a message is cut at a line end and
continues in the next message as a code block again (the entity is clipped on both sides).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from aiogram.types import MessageEntity

TELEGRAM_LIMIT = 4096
"""Characters of one message; counted here in UTF-16 code units, which is never fewer."""
REOPENABLE = frozenset({"pre", "blockquote", "expandable_blockquote"})
"""Block entities a cut may go through at a line end: each part still reads as a block."""
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_BLANK = " \n\t\r"


@dataclass(frozen=True, slots=True)
class Rendered:
    """A message's text and its formatting (entities), as Telegram stores it."""

    text: str
    entities: tuple[MessageEntity, ...] = ()

    def plain(self) -> str:
        """The text without formatting, link addresses written out (when they still fit)."""
        links = [e for e in self.entities if e.type == "text_link" and e.url]
        if not links:
            return self.text
        units = _Units(self.text)
        parts, at = [], 0
        for link in sorted(links, key=lambda e: e.offset):
            end = units.index(link.offset + link.length)
            if end < at:  # nested in a previous link: cannot happen in Telegram; keep the text
                continue
            label = self.text[units.index(link.offset):end]
            parts += [self.text[at:end], "" if link.url == label else f" ({link.url})"]
            at = end
        text = "".join(parts) + self.text[at:]
        return text if utf16_len(text) <= TELEGRAM_LIMIT else self.text

    def rstrip(self) -> Rendered:
        """Without trailing blanks (entities clipped to match), as Telegram would store it."""
        head = self.text.rstrip(_BLANK)
        if len(head) == len(self.text):
            return self
        end = utf16_len(head)
        entities = tuple(e if e.offset + e.length <= end else e.model_copy(update={"length": end - e.offset})
                         for e in self.entities if e.offset < end)
        return Rendered(head, entities)

    def then_plain(self, suffix: str) -> Rendered:
        """This text, without its trailing blanks, followed by `suffix` unformatted."""
        head = self.rstrip()
        return Rendered(head.text + suffix, head.entities)


def utf16_len(text: str) -> int:
    return len(text) + len(_ASTRAL.findall(text))


class _Units:
    """Python string index ↔ UTF-16 offset, for one text."""

    def __init__(self, text: str):
        self.length = len(text)
        self.astral = [m.start() for m in _ASTRAL.finditer(text)]  # usually none: then both are the same

    def offset(self, index: int) -> int:
        return index + bisect.bisect_left(self.astral, index)

    def index(self, offset: int) -> int:
        """The last index at or before UTF-16 `offset` (within the text)."""
        index = min(offset, self.length)
        while self.offset(index) > offset:  # one step back per astral character before it
            index -= 1
        return index


def split_text(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Plain text in messages of at most `limit` characters (see `split_rendered`)."""
    return [chunk.text for chunk in split_rendered(Rendered(text), limit)]


def split_rendered(rendered: Rendered, limit: int = TELEGRAM_LIMIT) -> list[Rendered]:
    """`rendered` in messages of at most `limit` UTF-16 units, each entity whole where it can be."""
    text, units = rendered.text, _Units(rendered.text)
    if text and text == text.strip(_BLANK) and units.offset(len(text)) <= limit:
        return [rendered]
    spans = [(units.index(e.offset), units.index(e.offset + e.length), e) for e in rendered.entities]
    chunks: list[Rendered] = []
    start = _skip_blank(text, 0, spans)
    while start < len(text) and units.offset(len(text)) - units.offset(start) > limit:
        end = _cut(text, start, units.index(units.offset(start) + limit), spans)
        chunks.append(_chunk(text, start, end, spans, units))
        start = _skip_blank(text, end, spans)
    if start < len(text) or not chunks:
        chunks.append(_chunk(text, start, len(text), spans, units))
    return chunks


def _cut(text: str, start: int, hard: int, spans: list[tuple[int, int, MessageEntity]]) -> int:
    """Where the message that starts at `start` ends (at most `hard`)."""
    inside = [(s, e, entity) for s, e, entity in spans if s < hard < e]
    for s, e, entity in inside:  # a code block that fits in the next message moves there whole
        if entity.type == "pre" and start < s and e - s <= hard - start:
            return s
    low = start + (hard - start) // 2  # shorter messages than half the limit are not worth it
    for separator, allowed in (("\n\n", ()), ("\n", ()), ("\n", REOPENABLE), (" ", ()), (" ", None)):
        at = hard
        while (at := text.rfind(separator, low, at)) > low:
            cut = at + (1 if separator == "\n" and allowed else 0)  # keep the line end out of the block
            if allowed is None or all(entity.type in allowed for s, e, entity in spans if s < cut < e):
                return cut
    return hard


def _skip_blank(text: str, index: int, spans: list[tuple[int, int, MessageEntity]]) -> int:
    """The next message starts after blank characters, but never skips into an entity (indented code)."""
    while index < len(text) and text[index] in _BLANK and not any(s <= index < e for s, e, _ in spans):
        index += 1
    return index


def _chunk(text: str, start: int, end: int, spans: list[tuple[int, int, MessageEntity]], units: _Units) -> Rendered:
    while end > start and text[end - 1] in _BLANK:
        end -= 1
    base = units.offset(start)
    entities = []
    for s, e, entity in spans:
        s, e = max(s, start), min(e, end)
        if s < e:
            offset = units.offset(s)
            entities.append(entity.model_copy(update={"offset": offset - base, "length": units.offset(e) - offset}))
    return Rendered(text[start:end] or "…", tuple(entities))

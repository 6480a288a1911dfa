"""The model's Markdown as Telegram text + entities: rendering, splitting, and Telegram refusing entities.

Every rendered text is checked with the fake Bot API's own entity checks (`check_entities`:
offsets and lengths in UTF-16 code units, as Telegram checks them), and the sends go over HTTP
to `FakeTelegram` on 127.0.0.1 through a real aiogram `Bot`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import MessageEntity

from luka_bot.core.config import ConfigError, load_settings
from luka_bot.services.message_text import TELEGRAM_LIMIT, Rendered, split_rendered, utf16_len
from luka_bot.services.rendering import Formatting, recent_blocks, render_draft, render_markdown
from luka_bot.services.streaming.frames import DraftFrames, EditFrames, frame_of
from tests.fakes.fake_telegram import FakeTelegram, check_entities
from tests.model_answers import PATHLIB, long_answer

USER = 3101


def entities_of(rendered: Rendered, kind: str) -> list[str]:
    """The texts that entities of type `kind` cover."""
    units = rendered.text.encode("utf-16-le")
    return [units[2 * e.offset:2 * (e.offset + e.length)].decode("utf-16-le") for e in rendered.entities
            if e.type == kind]


def telegram_accepts(rendered: Rendered) -> None:
    check_entities(rendered.text, [e.model_dump(exclude_none=True) for e in rendered.entities])


# --- rendering ------------------------------------------------------------------------------------


def test_a_model_answer_renders_as_text_and_entities_telegram_accepts() -> None:
    rendered = render_markdown(PATHLIB)
    telegram_accepts(rendered)
    text = rendered.text
    assert not re.search(r"\*\*|```|^#+ |\|---", text, re.MULTILINE), text
    assert entities_of(rendered, "bold")[0] == "Reading a file in Python", "the heading is bold, its # gone"
    code = entities_of(rendered, "pre")[0]
    assert "# *never* use __file__ here" in code and 'split("\\n")' in code, "code keeps its _ and * as written"
    assert next(e.language for e in rendered.entities if e.type == "pre") == "python"
    assert "  ⦁ with encoding=\"utf-8\", always" in text, "a nested list, indented under its item"
    table = entities_of(rendered, "pre")[1]
    assert "method" in table and "read_text" in table and "|---" not in table, "a table is a monospaced block"
    link = next(e for e in rendered.entities if e.type == "text_link")
    assert link.url == "https://docs.python.org/3/library/pathlib.html" and entities_of(rendered, "text_link") == [
        "pathlib docs"]
    assert "pathlib" in entities_of(rendered, "code"), "inline code"
    assert text.endswith("📚, and mind 2*3 vs 2 * 3."), "stray asterisks stay as written"


def test_offsets_count_utf16_units_after_an_emoji() -> None:
    rendered = render_markdown("👍🏽 **ok** then `x_y`")
    telegram_accepts(rendered)
    assert entities_of(rendered, "bold") == ["ok"] and entities_of(rendered, "code") == ["x_y"]


def test_every_prefix_of_a_stream_renders_safely() -> None:
    """A draft is any prefix: an unclosed ** or `, a fence cut anywhere; each frame must be accepted."""
    for end in range(1, len(PATHLIB) + 1):
        for render in (render_draft, render_markdown):
            rendered = render(PATHLIB[:end])
            assert rendered.text.strip(), end
            telegram_accepts(rendered)


def test_a_draft_cut_mid_fence_shows_the_code_so_far_as_code() -> None:
    cut = PATHLIB[:PATHLIB.index("read_text()  #")]
    rendered = render_markdown(cut)
    assert rendered.text.endswith("text = Path(file_name).") and "```" not in rendered.text
    (code,) = entities_of(rendered, "pre")
    assert code.startswith("from pathlib import Path") and code.endswith("Path(file_name)."), code
    assert render_draft(cut) == rendered, "the fence needs no closing: CommonMark runs it to the end"


def test_a_draft_shows_the_phrase_being_written_as_it_will_be() -> None:
    draft = render_draft("1. **Install it** with `pip install my_pkg`\n2. **Then run it with `my_pkg --di")
    assert draft.text == "1. Install it with pip install my_pkg\n2. Then run it with my_pkg --di"
    assert entities_of(draft, "bold") == ["Install it", "Then run it with my_pkg --di"]
    assert entities_of(draft, "code") == ["pip install my_pkg", "my_pkg --di"]
    assert render_draft("Hello **").text == "Hello", "a marker just opened shows nothing yet"
    assert render_draft("2**3 is 8").text == "2**3 is 8", "an exponent is not an opener"
    assert render_markdown("This is **very important and").text == "This is **very important and", \
        "a final text is rendered as written: a ** never closed stays"


def test_html_tags_outside_code_are_shown_not_dropped() -> None:
    rendered = render_markdown("Wrap it in <div> and <b>\n\n<section>\nhello\n</section>\n\n```html\n<p>x</p>\n```")
    assert "Wrap it in <div> and <b>" in rendered.text and "<section>\nhello\n</section>" in rendered.text
    assert entities_of(rendered, "pre") == ["<p>x</p>"], "inside code nothing is escaped"


def test_links_telegram_would_refuse_stay_as_their_text() -> None:
    rendered = render_markdown("[local](./notes.md), [js](javascript:alert(1)) and [ok](https://example.org/a_b)")
    assert rendered.text == "local, js and ok"
    assert [(e.type, e.url) for e in rendered.entities] == [("text_link", "https://example.org/a_b")]


# --- splitting ------------------------------------------------------------------------------------


def test_a_9000_character_answer_is_split_between_blocks_never_inside_one() -> None:
    answer = long_answer()
    assert len(answer) >= 9000
    rendered = render_markdown(answer)
    chunks = split_rendered(rendered)
    assert len(chunks) >= 3
    for chunk in chunks:
        assert utf16_len(chunk.text) <= TELEGRAM_LIMIT
        telegram_accepts(chunk)
    blocks = entities_of(rendered, "pre")
    assert len(blocks) == 13
    assert sorted(b for c in chunks for b in entities_of(c, "pre")) == sorted(blocks), "every code block whole"
    links = [link for c in chunks for link in entities_of(c, "text_link")]
    assert links == entities_of(rendered, "text_link"), "no link cut in two"
    assert re.sub(r"\s", "", "".join(c.text for c in chunks)) == re.sub(r"\s", "", rendered.text), "nothing lost"


def test_a_code_block_longer_than_a_message_continues_as_a_code_block() -> None:
    lines = [f"    value_{i} = compute(value_{i - 1}) * 2  # 😀 *{i}*" for i in range(1, 260)]
    rendered = render_markdown("Here:\n\n```python\n" + "\n".join(lines) + "\n```\n\nDone.")
    chunks = split_rendered(rendered)
    assert len(chunks) >= 3
    code = [block for chunk in chunks for block in entities_of(chunk, "pre")]
    assert len(code) == len(chunks), "each message holds one piece of the block, as a code block"
    assert all(e.language == "python" for c in chunks for e in c.entities if e.type == "pre")
    assert "\n".join(code) == entities_of(rendered, "pre")[0], "cut at line ends, indentation kept, nothing lost"
    for chunk in chunks:
        assert utf16_len(chunk.text) <= TELEGRAM_LIMIT, "the emoji count twice"
        telegram_accepts(chunk)


def test_bold_text_and_links_are_not_cut_when_a_space_outside_them_will_do() -> None:
    words = " ".join(["**" + " ".join(["bold"] * 30) + "**", "[" + " ".join(["link"] * 30) + "](https://a.org)"] * 60)
    rendered = render_markdown(words)
    chunks = split_rendered(rendered, limit=1000)
    assert len(chunks) > 5
    for chunk in chunks:
        assert all(text in (" ".join(["bold"] * 30), " ".join(["link"] * 30))
                   for kind in ("bold", "text_link") for text in entities_of(chunk, kind))


def test_a_frame_of_a_long_reply_renders_only_its_end_and_shows_its_last_message() -> None:
    answer = long_answer(60)  # ~44k characters
    frame = frame_of(answer, render_draft)
    assert answer.endswith(recent_blocks(answer)) and len(recent_blocks(answer)) < len(answer) // 3
    assert utf16_len(frame.text) <= TELEGRAM_LIMIT and frame.text.endswith("return total_60")
    telegram_accepts(frame)
    shorter = long_answer(13)
    assert frame_of(shorter, render_draft) == split_rendered(render_draft(shorter))[-1], \
        "up to 12k characters the frame is exactly the final split's last message"


# --- sending: Telegram refusing the entities -------------------------------------------------------


@pytest_asyncio.fixture
async def telegram() -> AsyncIterator[tuple[FakeTelegram, Bot]]:
    async with FakeTelegram() as fake:
        fake.add_chat(USER)
        bot = Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.url)))
        try:
            yield fake, bot
        finally:
            await bot.session.close()


async def test_entities_telegram_refuses_go_out_as_plain_text_with_one_log_line(
    telegram: tuple[FakeTelegram, Bot], caplog: pytest.LogCaptureFixture,
) -> None:
    fake, bot = telegram
    text = "😀 see the docs now"
    # "now" located in UTF-8 bytes (18), not UTF-16 units (16): a classic mistake, which Telegram refuses.
    wrong = Rendered(text, (MessageEntity(type="text_link", offset=11, length=4, url="https://docs.example.org"),
                            MessageEntity(type="bold", offset=18, length=3)))
    formatting = Formatting()
    caplog.set_level(logging.WARNING)

    async def send(body: str, entities: list[MessageEntity] | None) -> object:
        return await bot.send_message(USER, body, entities=entities, parse_mode=None)

    await formatting.send(send, wrong)
    await formatting.send(send, Rendered("**more** of it", (MessageEntity(type="bold", offset=0, length=4),)))
    refused, first, second = fake.calls_of("sendMessage")
    assert refused.error and "ends after the end of the text at UTF-16 offset 21" in refused.error["description"]
    assert first.ok and first.params["text"] == "😀 see the docs (https://docs.example.org) now", "nothing lost"
    assert "entities" not in first.params and "entities" not in second.params, "the rest of the reply goes plain"
    lines = [r.getMessage() for r in caplog.records if "refused the formatting" in r.getMessage()]
    assert len(lines) == 1 and "UTF-16 offset" in lines[0] and "\n" not in lines[0], lines


async def test_draft_and_edit_frames_carry_the_same_entities_as_the_message(
    telegram: tuple[FakeTelegram, Bot],
) -> None:
    fake, bot = telegram
    partial = PATHLIB[:PATHLIB.index("### Options")]
    await DraftFrames(bot, USER, 7, render=render_draft).send(partial)
    edits = EditFrames(bot, USER, render=render_draft)
    await edits.send(partial[:40])
    await edits.send(partial)
    (draft,) = fake.calls_of("sendMessageDraft")
    (edit,) = fake.calls_of("editMessageText")
    expected = render_markdown(partial)
    for call in (draft, edit):
        assert call.ok and call.params["text"] == expected.text and "parse_mode" not in call.params
        assert call.params["entities"] == [e.model_dump(exclude_none=True) for e in expected.entities]


# --- the setting -----------------------------------------------------------------------------------


def test_markdown_setting_defaults_on_and_a_bad_value_is_refused_naming_it() -> None:
    assert load_settings(_env_file=None).MARKDOWN == "on"
    assert load_settings(_env_file=None, MARKDOWN=" OFF ").MARKDOWN == "off"
    with pytest.raises(ConfigError, match="MARKDOWN"):
        load_settings(_env_file=None, MARKDOWN="html")

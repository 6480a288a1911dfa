"""A fake Telegram Bot API server for end-to-end tests of aiogram bots.

The server runs on 127.0.0.1 inside the test's event loop; the bot under test
(in-process or in a subprocess) talks to it over HTTP exactly as to Telegram::

    async with FakeTelegram() as fake:
        env = {"BOT_TOKEN": fake.token, "TELEGRAM_API_URL": fake.url}   # for a subprocess
        bot = Bot(fake.token, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.url)))
        await fake.wait_polling()                 # the bot is now long-polling
        fake.send_message("/start")               # a user writes to the bot
        call = await fake.wait_for("sendMessage") # what the bot answered
        fake.press_button("yes", message=fake.sent_messages()[-1])

Behaviour worth knowing:

* ``getUpdates`` long-polls like Telegram: it holds until an update is queued
  or ``timeout`` seconds pass, ``offset`` confirms (forgets) earlier updates and
  ``allowed_updates`` persists between calls and drops updates of other types
  (see ``dropped_updates``).  A newer ``getUpdates`` ends an older pending one
  with 409 Conflict, as Telegram does when two bot instances poll.
* Texts sent with ``parse_mode=HTML`` are parsed like Telegram does: stored
  messages carry the plain text plus entities and malformed HTML is rejected
  with Telegram's "can't parse entities" 400.  Markdown modes are stored raw.
  Explicit ``entities`` are checked as Telegram checks them: a known type,
  offset and length in UTF-16 code units within the text and not splitting a
  surrogate pair, a ``text_link`` URL Telegram accepts; else Telegram's 400.
* Chats must be known (a user wrote there, or ``add_chat``) unless
  ``strict_chats=False``; otherwise the bot gets "Bad Request: chat not found".
* ``chat_members[(chat_id, user_id)]`` is a status ("creator", "administrator",
  "member", "restricted", "left", "kicked") or a dict of ChatMember fields.  The
  bot is an administrator (can_delete_messages) in groups by default; set
  ``chat_members[(user_id, fake.bot_id)] = "kicked"`` for "bot was blocked by the
  user", or the bot's group status to "member" to make deleting others' messages
  fail.  Group messages always reach the bot (privacy mode off).
* Params are decoded: JSON fields (reply_markup, entities, ...) to Python, ids
  and offsets to int, flags to bool, uploads to ``{"filename", "content_type",
  "content"}`` placed where aiogram referenced them.
* ``stop()`` keeps all state, so ``stop()`` + ``start(fake.port)`` simulates an
  outage.
* Drafts (``sendMessageDraft``) are private-chat only, as in Telegram; every
  accepted frame is kept in ``drafts`` (``draft_frames(chat_id)``).  A user
  pressing the draft's Stop button is ``stop_generation(chat_id, draft_id)``.
  ``refuse(method, ...)`` makes every call of a method fail until ``accept``
  (a server without drafts: ``refuse("sendMessageDraft")``; ``body=`` answers
  with that raw, non-Bot-API body instead, like a proxy's HTML error page);
  ``fail_next`` is for one-off faults such as a 429.
* ``flood_control=FloodControl()`` (``tests/fakes/flood_control.py``) answers message calls
  beyond Telegram-like rates with 429 and ``retry_after``; off by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import itertools
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.flood_control import FloodControl

__all__ = ["NOT_MODIFIED", "ApiError", "Call", "FakeTelegram", "parse_html"]

JSON = dict[str, Any]
Predicate = Callable[["Call"], bool]
ChatKey = tuple[int, int]

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply "
    "markup are exactly the same as a current content and reply markup of a message"
)
CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
MAX_TEXT_LENGTH = 4096

# Form fields whose values aiogram sends as JSON documents.
JSON_KEYS = frozenset(
    {
        "reply_markup", "commands", "scope", "entities", "caption_entities",
        "allowed_updates", "link_preview_options", "reply_parameters", "menu_button",
        "message_ids", "media", "results", "permissions", "reaction", "rights",
        "options", "button", "prices",
    }
)
# Form fields that hold integers (chat_id may also be "@username": kept as str then).
INT_KEYS = frozenset(
    {
        "chat_id", "from_chat_id", "message_id", "user_id", "offset", "limit", "timeout",
        "message_thread_id", "reply_to_message_id", "cache_time", "until_date",
        "sender_chat_id", "direct_messages_topic_id", "max_connections", "draft_id",
    }
)
BOOL_KEYS = frozenset({"show_alert", "revoke_messages", "for_channels", "protect_content"})
BOOL_PREFIXES = ("disable_", "is_", "can_", "allow_", "drop_", "only_", "has_", "show_")
# Update types Telegram leaves out while allowed_updates is unset or empty.
OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
MESSAGE_RETURNING_SENDS = frozenset(
    {
        "senddocument", "sendphoto", "sendaudio", "sendvideo", "sendanimation",
        "sendvoice", "sendvideonote", "sendsticker", "sendlocation", "sendvenue",
        "sendcontact", "sendpoll", "senddice", "forwardmessage",
    }
)

logger = logging.getLogger(__name__)

_INT_RE = re.compile(r"-?\d+")
_HTML_ENTITY_RE = re.compile(r"&(?:(lt|gt|amp|quot)|#(\d+)|#[xX]([0-9a-fA-F]+));")
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_TAGS = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic",
    "u": "underline", "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
    "del": "strikethrough", "tg-spoiler": "spoiler", "span": "spoiler", "a": "text_link",
    "code": "code", "pre": "pre", "blockquote": "blockquote", "tg-emoji": "custom_emoji",
    "tg-time": "date_time",
}

_ADMIN_RIGHTS = {
    "can_be_edited": False, "is_anonymous": False, "can_manage_chat": True,
    "can_delete_messages": True, "can_manage_video_chats": True,
    "can_restrict_members": True, "can_promote_members": False, "can_change_info": True,
    "can_invite_users": True, "can_post_stories": False, "can_edit_stories": False,
    "can_delete_stories": False, "can_send_welcome_messages": False,
    "can_pin_messages": True, "can_manage_topics": False,
}
_RESTRICTED_RIGHTS = {
    "is_member": True, "until_date": 0, "can_send_messages": False,
    "can_send_audios": False, "can_send_documents": False, "can_send_photos": False,
    "can_send_videos": False, "can_send_video_notes": False,
    "can_send_voice_notes": False, "can_send_polls": False,
    "can_send_other_messages": False, "can_add_web_page_previews": False,
    "can_react_to_messages": False, "can_edit_tag": False, "can_change_info": False,
    "can_invite_users": False, "can_pin_messages": False, "can_manage_topics": False,
}
_MEMBER_DEFAULTS: dict[str, JSON] = {
    "creator": {"is_anonymous": False},
    "administrator": _ADMIN_RIGHTS,
    "member": {},
    "restricted": _RESTRICTED_RIGHTS,
    "left": {},
    "kicked": {"until_date": 0},
}


class ApiError(Exception):
    """A Bot API error answer: ``{"ok": false, "error_code": ..., "description": ...}``."""

    def __init__(self, error_code: int, description: str, retry_after: int | None = None, body: str | None = None):
        super().__init__(f"{error_code} {description}")
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after
        self.body = body  # answered as is (text/html) instead of Telegram's JSON

    def payload(self) -> JSON:
        """The JSON body Telegram would answer with."""
        body: JSON = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(reason: str) -> ApiError:
    """A 400 with Telegram's "Bad Request: ..." prefix."""
    return ApiError(400, f"Bad Request: {reason}")


@dataclass
class Call:
    """One API request the bot made, with decoded params and the outcome."""

    method: str
    params: JSON
    at: float
    index: int = 0
    result: Any = None
    error: JSON | None = None
    done: bool = False

    @property
    def ok(self) -> bool:
        """True when the call was answered with ``ok: true``."""
        return self.done and self.error is None

    def summary(self, width: int = 160) -> str:
        """A one-line description for failure dumps."""
        params = {k: _short_file(v) for k, v in self.params.items()}
        text = repr(params)
        if len(text) > width:
            text = text[: width - 3] + "..."
        return f"#{self.index} {self.method} {text} -> {self._outcome()}"

    def _outcome(self) -> str:
        if not self.done:
            return "pending"
        if self.error is None:
            return "ok"
        return f"ERROR {self.error.get('error_code')} {self.error.get('description')}"


def _short_file(value: Any) -> Any:
    """Uploaded files as ``<file name>`` in dumps."""
    if isinstance(value, dict) and isinstance(value.get("content"), bytes):
        return f"<file {value.get('filename')}>"
    return value


@dataclass
class _Fault:
    error: ApiError
    times: int


class _Signal:
    """Wakes every current waiter at once; take ``waiter()`` before checking state."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


@dataclass
class _ChatState:
    chat: JSON
    message_ids: itertools.count = field(default_factory=lambda: itertools.count(1))


# --------------------------------------------------------------------------- helpers


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram entity offsets."""
    return len(text.encode("utf-16-le")) // 2


def _decode_entities(text: str) -> str:
    """Decode the HTML entities Telegram understands; others stay literal."""

    def replace(match: re.Match[str]) -> str:
        named, dec, hexa = match.groups()
        if named:
            return _NAMED_ENTITIES[named]
        code = int(dec) if dec else int(hexa, 16)
        return chr(code) if code <= 0x10FFFF else match.group(0)

    return _HTML_ENTITY_RE.sub(replace, text)


def _byte_offset(source: str, index: int) -> int:
    return len(source[:index].encode())


def _scan_word(source: str, index: int) -> int:
    """Index of the first whitespace or '>' at or after ``index``."""
    while index < len(source) and not source[index].isspace() and source[index] != ">":
        index += 1
    return index


def _skip_spaces(source: str, index: int) -> int:
    while index < len(source) and source[index].isspace():
        index += 1
    return index


def _parse_error(reason: str) -> ApiError:
    return bad_request(f"can't parse entities: {reason}")


def _parse_attributes(source: str, index: int, begin: int) -> tuple[JSON, int]:
    """Parse ``name="value"`` pairs up to '>'; returns attributes and the index after '>'."""
    attrs: JSON = {}
    unclosed = _parse_error(f"Unclosed start tag at byte offset {_byte_offset(source, begin)}")
    while True:
        index = _skip_spaces(source, index)
        if index >= len(source):
            raise unclosed
        if source[index] == ">":
            return attrs, index + 1
        end = index
        while end < len(source) and source[end] not in " \t\r\n=>":
            end += 1
        name, value, index = source[index:end].lower(), "", _skip_spaces(source, end)
        if index < len(source) and source[index] == "=":
            index = _skip_spaces(source, index + 1)
            if index >= len(source):
                raise unclosed
            if source[index] in "\"'":
                close = source.find(source[index], index + 1)
                if close < 0:
                    raise unclosed
                value, index = source[index + 1 : close], close + 1
            else:
                end = _scan_word(source, index)
                value, index = source[index:end], end
        attrs[name] = _decode_entities(value)


def _html_entity(tag: str, offset: int, length: int, attrs: JSON) -> JSON | None:
    """The MessageEntity a closed tag produces (None for empty or merged ones)."""
    if length == 0:
        return None
    entity: JSON = {"type": _HTML_TAGS[tag], "offset": offset, "length": length}
    if tag == "a":
        entity["url"] = attrs.get("href", "")
    elif tag == "pre" and attrs.get("language"):
        entity["language"] = attrs["language"]
    elif tag == "tg-emoji":
        entity["custom_emoji_id"] = attrs.get("emoji-id", "")
    elif tag == "tg-time":
        entity["unix_time"] = int(attrs.get("unix", "0") or 0)
    elif tag == "blockquote" and "expandable" in attrs:
        entity["type"] = "expandable_blockquote"
    return entity


def parse_html(source: str) -> tuple[str, list[JSON]]:
    """Parse Telegram-flavoured HTML into ``(plain_text, entities)`` like the Bot API.

    Raises ``ApiError`` 400 "can't parse entities: ..." with Telegram's wording for
    unsupported or unbalanced tags (a bare ``<`` included).
    """
    out: list[str] = []
    position = 0  # UTF-16 length of ``out``
    stack: list[tuple[str, int, JSON]] = []
    entities: list[JSON] = []
    index = 0

    while index < len(source):
        char = source[index]
        if char == "&" and (match := _HTML_ENTITY_RE.match(source, index)):
            decoded = _decode_entities(match.group(0))
            out.append(decoded)
            position += utf16_len(decoded)
            index = match.end()
            continue
        if char != "<":
            out.append(char)
            position += 2 if ord(char) > 0xFFFF else 1
            index += 1
            continue
        begin, at = index, _byte_offset(source, index)
        if source.startswith("</", index):
            if not stack:
                raise _parse_error(f"Unexpected end tag at byte offset {at}")
            end = _scan_word(source, index + 2)
            name = source[index + 2 : end].lower()
            end = _skip_spaces(source, end)
            if end >= len(source) or source[end] != ">":
                raise _parse_error(f"Unclosed end tag at byte offset {at}")
            tag, start, attrs = stack.pop()
            if name and name != tag:
                raise _parse_error(f'Unmatched end tag at byte offset {at}, expected "</{tag}>", found "</{name}>"')
            if tag == "code" and stack and stack[-1][0] == "pre" and stack[-1][1] == start:
                stack[-1][2]["language"] = attrs.get("class", "").removeprefix("language-")
            elif entity := _html_entity(tag, start, position - start, attrs):
                entities.append(entity)
            index = end + 1
            continue
        end = _scan_word(source, index + 1)
        if end >= len(source):
            raise _parse_error(f"Unclosed start tag at byte offset {at}")
        name = source[index + 1 : end].lower()
        if name not in _HTML_TAGS:
            raise _parse_error(f'Unsupported start tag "{name}" at byte offset {at}')
        attrs, index = _parse_attributes(source, end, begin)
        if name == "span" and attrs.get("class") != "tg-spoiler":
            raise _parse_error(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
        stack.append((name, position, attrs))
    if stack:
        raise _parse_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


ENTITY_TYPES = frozenset(
    {
        "mention", "hashtag", "cashtag", "bot_command", "url", "email", "phone_number", "bold", "italic",
        "underline", "strikethrough", "spoiler", "blockquote", "expandable_blockquote", "code", "pre",
        "text_link", "text_mention", "custom_emoji", "date_time",
    }
)


def _link_error(url: str) -> str | None:
    """Why Telegram refuses a text_link URL (None: accepted): http(s) and tg links, or a bare host name."""
    scheme, _, rest = url.partition("://") if "://" in url else ("", "", url)
    if scheme.lower() == "tg":
        return None
    if scheme and scheme.lower() not in ("http", "https") or ":" in url and not scheme:
        return "Unsupported URL protocol"
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    return None if re.fullmatch(r"[\w-]+(\.[\w-]+)+", host) else "Wrong HTTP URL"


def check_entities(text: str, entities: list[JSON]) -> None:
    """Telegram's checks of explicit entities against the text (offsets in UTF-16 code units)."""
    encoded = text.encode("utf-16-le")
    length = len(encoded) // 2

    def in_surrogate_pair(offset: int) -> bool:
        unit = int.from_bytes(encoded[2 * offset : 2 * offset + 2], "little")
        return 0 < offset < length and 0xDC00 <= unit <= 0xDFFF

    def byte_offset(offset: int) -> int:
        """Where Telegram notices: the UTF-8 offset after the symbol that `offset` splits."""
        return len(encoded[: 2 * offset + 2].decode("utf-16-le").encode())

    for entity in entities:
        if not isinstance(entity, dict) or entity.get("type") not in ENTITY_TYPES:
            raise bad_request("can't parse MessageEntity: Unsupported type specified")
        offset, size = entity.get("offset"), entity.get("length")
        if not isinstance(offset, int) or not isinstance(size, int) or offset < 0 or size < 0:
            raise bad_request("can't parse MessageEntity: Field \"offset\" must be of type Number")
        if offset + size > length:
            raise bad_request(f"entity beginning at UTF-16 offset {offset} ends after the end of the text "
                              f"at UTF-16 offset {offset + size}")
        if in_surrogate_pair(offset):
            raise bad_request(f"entity begins in a middle of a UTF-16 symbol at byte offset {byte_offset(offset)}")
        if in_surrogate_pair(offset + size):
            raise bad_request(f"entity beginning at UTF-16 offset {offset} ends in a middle of a UTF-16 symbol "
                              f"at byte offset {byte_offset(offset + size)}")
        if entity["type"] == "text_link":
            if "url" not in entity:
                raise bad_request("can't parse MessageEntity: Can't find field \"url\"")
            if reason := _link_error(str(entity["url"])):
                raise bad_request(f"entity URL '{entity['url']}' is invalid: {reason}")


def render_text(text: str, parse_mode: str | None, entities: list[JSON] | None) -> tuple[str, list[JSON]]:
    """What Telegram stores for a text: explicit entities win (checked), then HTML parsing."""
    if entities:
        check_entities(text, entities)
        return text, entities
    if parse_mode and parse_mode.lower() == "html":
        return parse_html(text)
    return text, []


def _decode_value(key: str, value: Any) -> Any:
    """Turn one form value back into the Python value aiogram serialised."""
    if not isinstance(value, str):
        return value
    if key in JSON_KEYS:
        with contextlib.suppress(ValueError):
            parsed = json.loads(value)
            if isinstance(parsed, dict | list):
                return parsed
    if key in INT_KEYS and _INT_RE.fullmatch(value):
        return int(value)
    if value in ("true", "false") and (key in BOOL_KEYS or key.startswith(BOOL_PREFIXES)):
        return value == "true"
    return value


async def read_params(request: web.Request) -> JSON:
    """Collect params from the query string and a form, multipart or JSON body."""
    raw: JSON = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            raw.update(await request.json())
        else:
            for key, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    value = {
                        "filename": value.filename,
                        "content_type": value.content_type,
                        "content": value.file.read(),
                    }
                raw[key] = value
    return _resolve_attachments({key: _decode_value(key, value) for key, value in raw.items()})


def _resolve_attachments(params: JSON) -> JSON:
    """Put uploaded files where aiogram referenced them (``"attach://<key>"``)."""
    for key, value in list(params.items()):
        if isinstance(value, str) and value.startswith("attach://"):
            upload = params.get(value.removeprefix("attach://"))
            if isinstance(upload, dict):
                params[key] = upload
                del params[value.removeprefix("attach://")]
    return params


def _command_entities(text: str) -> list[JSON]:
    """A bot_command entity over the leading ``/command[@bot]`` word, if any."""
    if not text.startswith("/") or len(text) < 2 or text[1].isspace():
        return []
    word = text.split(maxsplit=1)[0]
    return [{"type": "bot_command", "offset": 0, "length": utf16_len(word)}]


def _inline_markup(markup: Any) -> JSON | None:
    """The part of reply_markup Telegram stores on a message (inline keyboards only)."""
    if isinstance(markup, dict) and "inline_keyboard" in markup:
        return markup
    return None


def _callback_data(message: JSON) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [button["callback_data"] for row in rows for button in row if "callback_data" in button]


def _update_type(update: JSON) -> str:
    return next((key for key in update if key != "update_id"), "")


# --------------------------------------------------------------------------- server


class FakeTelegram:
    """An in-loop fake of the Telegram Bot API; see the module docstring."""

    def __init__(
        self,
        token: str = "123456:TEST-token-not-real",
        bot_id: int = 123456,
        bot_username: str = "luka_test_bot",
        *,
        bot_first_name: str = "Luka Test Bot",
        strict_chats: bool = True,
        flood_control: FloodControl | None = None,
    ) -> None:
        self.token = token
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.strict_chats = strict_chats
        self.flood_control = flood_control
        self.port: int | None = None
        self.calls: list[Call] = []
        self.chat_members: dict[tuple[int, int], str | JSON] = {}
        self.dropped_updates: list[JSON] = []
        self.menu_buttons: dict[int | None, JSON] = {}
        self._commands: dict[tuple[str, str], list[JSON]] = {}
        self._updates: list[JSON] = []
        self._allowed_updates: list[str] | None = None
        self._chats: dict[int, _ChatState] = {}
        self._users: dict[int, JSON] = {}
        self._messages: dict[ChatKey, JSON] = {}
        self._deleted: set[ChatKey] = set()
        self._bot_messages: list[ChatKey] = []
        self._callback_queries: set[str] = set()
        self._faults: dict[str, list[_Fault]] = {}
        self._refused: dict[str, ApiError] = {}
        self.drafts: list[JSON] = []
        self._update_ids = itertools.count(1)
        self._query_ids = itertools.count(1_000_000_001)
        self._poll_ids = itertools.count(1)
        self._active_poll = 0
        self._updates_signal = _Signal()
        self._calls_signal = _Signal()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._handlers = self._build_handlers()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL for ``TelegramAPIServer.from_base``."""
        if self.port is None:
            raise RuntimeError("FakeTelegram is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def bot_user(self) -> JSON:
        """The bot's own User object."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    async def start(self, port: int | None = None) -> FakeTelegram:
        """Listen on 127.0.0.1 (a free port, or ``port`` to come back after ``stop``)."""
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._closing = False
        return self

    async def stop(self) -> None:
        """Answer pending long polls and close the socket; state is kept."""
        self._closing = True
        self._updates_signal.notify()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ driving

    def add_chat(
        self,
        chat_id: int,
        chat_type: str = "private",
        *,
        title: str | None = None,
        first_name: str = "Test",
        username: str | None = None,
    ) -> JSON:
        """Make a chat known (e.g. an admin chat the bot writes to unprompted)."""
        chat: JSON = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = first_name
        else:
            chat["title"] = title or f"Test {chat_type} {chat_id}"
        if username:
            chat["username"] = username
        state = self._chats.get(chat_id)
        if state is None:
            self._chats[chat_id] = _ChatState(chat)
        else:
            state.chat.update(chat)
        return copy.deepcopy(chat)

    def send_message(
        self,
        text: str,
        *,
        user_id: int = 1001,
        chat_id: int | None = None,
        chat_type: str = "private",
        language_code: str = "en",
        first_name: str = "Test",
        username: str | None = None,
        chat_title: str | None = None,
        reply_to: int | JSON | None = None,
    ) -> JSON:
        """Enqueue an Update with a user's text Message; returns that message."""
        user = self._remember_user(user_id, first_name, username, language_code)
        chat = self._user_chat(user, chat_id, chat_type, chat_title)
        content: JSON = {"text": text}
        if entities := _command_entities(text):
            content["entities"] = entities
        if reply_to is not None:
            reply_id = reply_to if isinstance(reply_to, int) else reply_to["message_id"]
            original = self._messages.get((chat["id"], reply_id))
            if original is None:
                raise ValueError(f"reply_to: no message {reply_id} in chat {chat['id']}")
            content["reply_to_message"] = copy.deepcopy(original)
        message = self._store_message(chat["id"], user, content)
        self.add_update({"message": copy.deepcopy(message)})
        return copy.deepcopy(message)

    def press_button(
        self,
        data: str,
        *,
        user_id: int = 1001,
        message: JSON,
        language_code: str = "en",
        first_name: str = "Test",
        username: str | None = None,
        strict: bool = True,
    ) -> JSON:
        """Enqueue a callback_query for a button on a bot message; returns the query.

        The query carries the message as it is now (edits applied).  With
        ``strict`` the message must still exist and currently show a button
        with this callback data; pass ``strict=False`` to press stale buttons.
        """
        key = (message["chat"]["id"], message["message_id"])
        current = self._messages.get(key)
        if strict:
            self._check_pressable(key, current, data)
        user = self._remember_user(user_id, first_name, username, language_code)
        query = {
            "id": str(next(self._query_ids)),
            "from": user,
            "chat_instance": str(abs(key[0])),
            "message": copy.deepcopy(current or message),
            "data": data,
        }
        self._callback_queries.add(query["id"])
        self.add_update({"callback_query": query})
        return copy.deepcopy(query)

    def add_update(self, update: JSON) -> None:
        """Enqueue a raw Update (``update_id`` is assigned when missing)."""
        update = copy.deepcopy(update)
        update.setdefault("update_id", next(self._update_ids))
        self._updates.append(update)
        self._updates_signal.notify()

    def fail_next(
        self,
        method: str,
        *,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with this Telegram error."""
        fault = _Fault(ApiError(error_code, description, retry_after), times)
        self._faults.setdefault(method.lower(), []).append(fault)

    def refuse(
        self,
        method: str,
        *,
        error_code: int = 404,
        description: str = "Not Found: method not found",
        body: str | None = None,
    ) -> None:
        """Make every call of ``method`` fail with this error until ``accept(method)``.

        With ``body``, the answer is that raw text (HTTP status ``error_code``), not Telegram's JSON.
        """
        self._refused[method.lower()] = ApiError(error_code, description, body=body)

    def accept(self, method: str) -> None:
        """Undo ``refuse(method)``."""
        self._refused.pop(method.lower(), None)

    def stop_generation(self, chat_id: int, draft_id: int, *, strict: bool = True) -> JSON:
        """Enqueue the ``stopped_message_generation`` update of a user pressing Stop under a draft.

        With ``strict`` the bot must have shown that draft with ``can_stop``.
        """
        if strict and not any(d["chat_id"] == chat_id and d["draft_id"] == draft_id and d.get("can_stop")
                              for d in self.drafts):
            raise ValueError(f"stop_generation: no draft {draft_id} with can_stop in chat {chat_id}")
        event: JSON = {"chat": copy.deepcopy(self._chat(chat_id)), "draft_id": draft_id}
        self.add_update({"stopped_message_generation": event})
        return copy.deepcopy(event)

    # ------------------------------------------------------------------ observing

    def draft_frames(self, chat_id: int | None = None, draft_id: int | None = None) -> list[JSON]:
        """Accepted draft frames (``chat_id``, ``draft_id``, ``text``, ``can_stop``, ``at``), oldest first."""
        return [
            copy.deepcopy(d) for d in self.drafts
            if (chat_id is None or d["chat_id"] == chat_id) and (draft_id is None or d["draft_id"] == draft_id)
        ]

    def calls_of(self, method: str) -> list[Call]:
        """Recorded calls of one method (case-insensitive), oldest first."""
        return [call for call in self.calls if call.method.lower() == method.lower()]

    def mark(self) -> int:
        """The current number of calls, for ``wait_for(after=...)``."""
        return len(self.calls)

    async def wait_for(
        self,
        method: str,
        predicate: Predicate | None = None,
        timeout: float = 10.0,
        *,
        after: int = 0,
    ) -> Call:
        """Wait for an answered call of ``method`` matching ``predicate`` at index >= ``after``."""

        def find() -> Call | None:
            for call in self.calls[after:]:
                if not call.done or call.method.lower() != method.lower():
                    continue
                if predicate is None or predicate(call):
                    return call
            return None

        condition = " matching the predicate" if predicate is not None else ""
        return await self._wait_until(find, timeout, f"answered {method} call{condition} at index >= {after}")

    async def wait_polling(self, timeout: float = 10.0, *, after: int = 0) -> Call:
        """Wait until the bot has a getUpdates request in flight (it is polling)."""

        def find() -> Call | None:
            return next((c for c in self.calls[after:] if c.method.lower() == "getupdates"), None)

        return await self._wait_until(find, timeout, f"getUpdates call at index >= {after}")

    def sent_messages(self, chat_id: int | None = None, *, include_deleted: bool = False) -> list[JSON]:
        """Copies of the messages the bot sent, edits applied, oldest first."""
        return [
            copy.deepcopy(self._messages[key])
            for key in self._bot_messages
            if (chat_id is None or key[0] == chat_id) and (include_deleted or key not in self._deleted)
        ]

    def message(self, chat_id: int, message_id: int) -> JSON | None:
        """A copy of any stored message as it is now (None if unknown)."""
        stored = self._messages.get((chat_id, message_id))
        return copy.deepcopy(stored) if stored is not None else None

    def is_deleted(self, chat_id: int, message_id: int) -> bool:
        """Whether the bot deleted this message."""
        return (chat_id, message_id) in self._deleted

    def commands(self, scope: JSON | None = None, language_code: str = "") -> list[JSON]:
        """The bot commands last set for a scope (default scope when None)."""
        return copy.deepcopy(self._commands.get(self._commands_key(scope, language_code), []))

    @property
    def pending_updates(self) -> list[JSON]:
        """Queued updates the bot has not confirmed yet."""
        return copy.deepcopy(self._updates)

    # ------------------------------------------------------------------ waiting internals

    async def _wait_until(self, find: Callable[[], Call | None], timeout: float, what: str) -> Call:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            wake = self._calls_signal.waiter()
            if (found := find()) is not None:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._timeout_report(what, timeout))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)

    def _timeout_report(self, what: str, timeout: float, last: int = 25) -> str:
        recent = [c for c in self.calls if c.method.lower() != "getupdates"][-last:]
        polls = len(self.calls_of("getUpdates"))
        lines = [
            f"FakeTelegram: no {what} within {timeout}s.",
            f"Recent calls (last {len(recent)}, getUpdates omitted; {polls} getUpdates so far):",
            *(f"  {call.summary()}" for call in recent),
            f"Pending (unconfirmed) updates: {[u['update_id'] for u in self._updates]}",
        ]
        if self.dropped_updates:
            dropped = [(u["update_id"], _update_type(u)) for u in self.dropped_updates]
            lines.append(f"Dropped by allowed_updates={self._allowed_updates}: {dropped}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        call = Call(method, await read_params(request), time.time(), index=len(self.calls))
        self.calls.append(call)
        self._calls_signal.notify()
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            self._raise_scripted_fault(method)
            if self.flood_control is not None and (wait := self.flood_control.check(method, call.params)):
                raise ApiError(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
            call.result = await self._dispatch(method, call.params)
            body, status = {"ok": True, "result": call.result}, 200
        except ApiError as error:
            call.error = body = error.payload()
            status = error.error_code
            if error.body is not None:
                call.done = True
                self._calls_signal.notify()
                return web.Response(text=error.body, status=status, content_type="text/html")
        except Exception as error:  # a bug in the fake or a bad test setup: keep it visible
            logger.exception("FakeTelegram failed to handle %s", method)
            call.error = body = {"ok": False, "error_code": 500, "description": f"Internal Server Error: {error!r}"}
            status = 500
        call.done = True
        self._calls_signal.notify()
        return web.json_response(body, status=status)

    async def _dispatch(self, method: str, params: JSON) -> Any:
        handler = self._handlers.get(method.lower(), self._unknown_method)
        try:
            outcome = handler(params, method)
        except KeyError as missing:
            raise bad_request(f"parameter {missing} is required") from None
        return await outcome if inspect.isawaitable(outcome) else outcome

    def _raise_scripted_fault(self, method: str) -> None:
        if (refusal := self._refused.get(method.lower())) is not None:
            raise refusal
        queue = self._faults.get(method.lower())
        if not queue:
            return
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        raise fault.error

    def _build_handlers(self) -> dict[str, Callable[[JSON, str], Any]]:
        handlers: dict[str, Callable[[JSON, str], Any]] = {
            "getMe": lambda p, m: self._get_me(),
            "getUpdates": lambda p, m: self._get_updates(p),
            "deleteWebhook": lambda p, m: self._delete_webhook(p),
            "getWebhookInfo": lambda p, m: self._webhook_info(),
            "sendMessage": lambda p, m: self._send_message(p),
            "sendMessageDraft": lambda p, m: self._send_message_draft(p),
            "editMessageText": lambda p, m: self._edit_message(p, text_edit=True),
            "editMessageReplyMarkup": lambda p, m: self._edit_message(p, text_edit=False),
            "deleteMessage": lambda p, m: self._delete_message(p["chat_id"], p["message_id"]),
            "deleteMessages": lambda p, m: self._delete_messages(p),
            "sendChatAction": lambda p, m: bool(self._check_can_write(self._chat(p.get("chat_id")))),
            "answerCallbackQuery": lambda p, m: self._answer_callback_query(p),
            "setMyCommands": lambda p, m: self._set_commands(p),
            "deleteMyCommands": lambda p, m: self._delete_commands(p),
            "getMyCommands": lambda p, m: self.commands(p.get("scope"), p.get("language_code", "")),
            "getChatMember": lambda p, m: self._member(self._chat(p.get("chat_id")), p["user_id"]),
            "getChatAdministrators": lambda p, m: self._administrators(self._chat(p.get("chat_id"))),
            "getChat": lambda p, m: self._full_chat(self._chat(p.get("chat_id"))),
            "setChatMenuButton": lambda p, m: self._set_menu_button(p),
            "getChatMenuButton": lambda p, m: self.menu_buttons.get(p.get("chat_id"), {"type": "default"}),
        }
        return {name.lower(): handler for name, handler in handlers.items()}

    # ------------------------------------------------------------------ API methods

    def _get_me(self) -> JSON:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: JSON) -> list[JSON]:
        """Long poll: answer as soon as updates are ready or after ``timeout`` seconds."""
        self._confirm_updates(params.get("offset"))
        if "allowed_updates" in params:
            self._allowed_updates = params["allowed_updates"] or None
        poll_id = self._active_poll = next(self._poll_ids)
        self._updates_signal.notify()  # an older pending poll is now superseded
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(float(params.get("timeout") or 0), 0.0)
        while True:
            wake = self._updates_signal.waiter()
            if poll_id != self._active_poll:
                raise ApiError(409, CONFLICT)
            ready = self._deliverable(limit)
            remaining = deadline - loop.time()
            if ready or self._closing or remaining <= 0:
                return ready
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)

    def _confirm_updates(self, offset: int | None) -> None:
        if offset is None:
            return
        if offset < 0:
            self._updates = self._updates[offset:]
        else:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

    def _deliverable(self, limit: int) -> list[JSON]:
        """Drop updates outside allowed_updates, then return up to ``limit`` copies."""
        kept = []
        for update in self._updates:
            kind = _update_type(update)
            allowed = kind in self._allowed_updates if self._allowed_updates else kind not in OPT_IN_UPDATES
            (kept if allowed else self.dropped_updates).append(update)
        self._updates = kept
        return copy.deepcopy(kept[:limit])

    def _webhook_info(self) -> JSON:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}

    def _delete_webhook(self, params: JSON) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _send_message(self, params: JSON) -> JSON:
        chat = self._check_can_write(self._chat(params.get("chat_id")))
        text, entities = self._checked_text(params)
        content: JSON = {"text": text}
        if entities:
            content["entities"] = entities
        return self._store_bot_message(chat, params, content)

    def _send_message_draft(self, params: JSON) -> bool:
        """A draft frame: private chats only, non-zero draft_id, 0-4096 characters (empty = "Thinking…")."""
        chat = self._check_can_write(self._chat(params.get("chat_id")))
        if chat["type"] != "private":
            raise bad_request("TEXTDRAFT_PEER_INVALID")
        draft_id = params.get("draft_id")
        if not isinstance(draft_id, int) or draft_id == 0:
            raise bad_request("draft_id must be non-zero")
        text, _ = render_text(params.get("text", ""), params.get("parse_mode"), params.get("entities"))
        if len(text) > MAX_TEXT_LENGTH:
            raise bad_request("message is too long")
        self.drafts.append({"chat_id": chat["id"], "draft_id": draft_id, "text": text,
                            "can_stop": bool(params.get("can_stop")), "at": time.time()})
        return True

    def _send_other(self, params: JSON, method: str) -> JSON:
        """sendPhoto, sendDocument, ...: a Message with the caption (media kept in the call)."""
        chat = self._check_can_write(self._chat(params.get("chat_id")))
        content: JSON = {}
        if caption := params.get("caption"):
            text, entities = render_text(caption, params.get("parse_mode"), params.get("caption_entities"))
            content["caption"] = text
            if entities:
                content["caption_entities"] = entities
        if method.lower() == "senddocument":
            file_id = f"doc-{len(self.calls)}"
            content["document"] = {"file_id": file_id, "file_unique_id": file_id}
            if isinstance(upload := params.get("document"), dict) and upload.get("filename"):
                content["document"]["file_name"] = upload["filename"]
        return self._store_bot_message(chat, params, content)

    def _edit_message(self, params: JSON, *, text_edit: bool) -> JSON | bool:
        """editMessageText / editMessageReplyMarkup with Telegram's "not modified" rule."""
        if "inline_message_id" in params:
            return True
        key = (self._chat(params.get("chat_id"))["id"], params.get("message_id"))
        message = self._messages.get(key)
        if message is None or key in self._deleted:
            raise bad_request("message to edit not found")
        if message["from"]["id"] != self.bot_id:
            raise bad_request("message can't be edited")
        new: JSON = {"text": message.get("text"), "entities": message.get("entities", [])}
        if text_edit:
            new["text"], new["entities"] = self._checked_text(params)
        new["reply_markup"] = _inline_markup(params.get("reply_markup"))  # omitted = removed
        if all(message.get(name, [] if name == "entities" else None) == value for name, value in new.items()):
            raise ApiError(400, NOT_MODIFIED)
        for key_name, value in new.items():
            if value:
                message[key_name] = value
            else:
                message.pop(key_name, None)
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    def _delete_message(self, chat_id: Any, message_id: int) -> bool:
        chat = self._chat(chat_id)
        key = (chat["id"], message_id)
        message = self._messages.get(key)
        if message is None or key in self._deleted:
            raise bad_request("message to delete not found")
        foreign = message["from"]["id"] != self.bot_id
        if foreign and chat["type"] != "private" and not self._bot_can_delete(chat):
            raise bad_request("message can't be deleted")
        self._deleted.add(key)
        return True

    def _delete_messages(self, params: JSON) -> bool:
        for message_id in params.get("message_ids", []):
            with contextlib.suppress(ApiError):
                self._delete_message(params.get("chat_id"), message_id)
        return True

    def _answer_callback_query(self, params: JSON) -> bool:
        if params.get("callback_query_id") not in self._callback_queries:
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        return True

    def _set_commands(self, params: JSON) -> bool:
        key = self._commands_key(params.get("scope"), params.get("language_code", ""))
        self._commands[key] = params.get("commands", [])
        return True

    def _delete_commands(self, params: JSON) -> bool:
        self._commands.pop(self._commands_key(params.get("scope"), params.get("language_code", "")), None)
        return True

    def _set_menu_button(self, params: JSON) -> bool:
        self.menu_buttons[params.get("chat_id")] = params.get("menu_button", {"type": "default"})
        return True

    def _unknown_method(self, params: JSON, method: str) -> Any:
        if method.lower() in MESSAGE_RETURNING_SENDS:
            return self._send_other(params, method)
        return True

    # ------------------------------------------------------------------ chats, users, members

    def _chat(self, chat_id: Any) -> JSON:
        """The chat a ``chat_id`` param names, or Telegram's "chat not found"."""
        if isinstance(chat_id, str) and chat_id.startswith("@"):
            username = chat_id[1:]
            found = next((s.chat for s in self._chats.values() if s.chat.get("username") == username), None)
            if found is None:
                raise bad_request("chat not found")
            return found
        if not isinstance(chat_id, int):
            raise bad_request("chat_id is empty" if chat_id is None else "chat not found")
        if chat_id not in self._chats:
            if self.strict_chats:
                raise bad_request("chat not found")
            self.add_chat(chat_id, "private" if chat_id > 0 else "supergroup")
        return self._chats[chat_id].chat

    def _user_chat(self, user: JSON, chat_id: int | None, chat_type: str, title: str | None) -> JSON:
        if chat_type == "private":
            chat_id = user["id"] if chat_id is None else chat_id
            self.add_chat(chat_id, "private", first_name=user["first_name"], username=user.get("username"))
        else:
            if chat_id is None or chat_id >= 0:
                raise ValueError(f"{chat_type} chats need a negative chat_id, got {chat_id}")
            if chat_id not in self._chats or title:
                self.add_chat(chat_id, chat_type, title=title)
        return self._chats[chat_id].chat

    def _remember_user(self, user_id: int, first_name: str, username: str | None, language_code: str) -> JSON:
        user: JSON = {"id": user_id, "is_bot": False, "first_name": first_name}
        user["language_code"] = language_code
        if username:
            user["username"] = username
        self._users[user_id] = user
        return copy.deepcopy(user)

    def _known_user(self, user_id: int) -> JSON:
        if user_id == self.bot_id:
            return self.bot_user
        unknown = {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}
        return copy.deepcopy(self._users.get(user_id, unknown))

    def _member(self, chat: JSON, user_id: int) -> JSON:
        """A ChatMember from ``chat_members`` (a status or a dict of overrides)."""
        spec = self.chat_members.get((chat["id"], user_id))
        if spec is None:
            is_bot_in_group = user_id == self.bot_id and chat["type"] != "private"
            spec = "administrator" if is_bot_in_group else "member"
        overrides: JSON = {"status": spec} if isinstance(spec, str) else dict(spec)
        status = overrides.get("status", "administrator")
        if status not in _MEMBER_DEFAULTS:
            raise ValueError(f"chat_members[{(chat['id'], user_id)}]: unknown status {status!r}")
        return {"status": status, **_MEMBER_DEFAULTS[status], **overrides, "user": self._known_user(user_id)}

    def _administrators(self, chat: JSON) -> list[JSON]:
        if chat["type"] == "private":
            raise bad_request("there are no administrators in the private chat")
        user_ids = [uid for (cid, uid) in self.chat_members if cid == chat["id"]]
        if self.bot_id not in user_ids:
            user_ids.append(self.bot_id)
        members = [self._member(chat, uid) for uid in user_ids]
        return [m for m in members if m["status"] in ("creator", "administrator")]

    def _check_can_write(self, chat: JSON) -> JSON:
        """Telegram's 403s when the bot was blocked, kicked or is not in the chat."""
        status = self._member(chat, self.bot_id)["status"]
        if chat["type"] == "private" and status == "kicked":
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if status == "kicked":
            raise ApiError(403, f"Forbidden: bot was kicked from the {chat['type']} chat")
        if status == "left":
            raise ApiError(403, f"Forbidden: bot is not a member of the {chat['type']} chat")
        return chat

    def _bot_can_delete(self, chat: JSON) -> bool:
        member = self._member(chat, self.bot_id)
        return member["status"] == "creator" or bool(member.get("can_delete_messages"))

    def _full_chat(self, chat: JSON) -> JSON:
        kinds = ("unlimited_gifts", "limited_gifts", "unique_gifts", "premium_subscription", "gifts_from_channels")
        gifts = dict.fromkeys(kinds, False)
        return {**chat, "accent_color_id": 0, "max_reaction_count": 11, "accepted_gift_types": gifts}

    @staticmethod
    def _commands_key(scope: JSON | None, language_code: str) -> tuple[str, str]:
        return json.dumps(scope or {"type": "default"}, sort_keys=True), language_code or ""

    # ------------------------------------------------------------------ message store

    def _store_message(self, chat_id: int, sender: JSON, content: JSON) -> JSON:
        state = self._chats[chat_id]
        message: JSON = {
            "message_id": next(state.message_ids),
            "date": int(time.time()),
            "chat": copy.deepcopy(state.chat),
            "from": copy.deepcopy(sender),
            **content,
        }
        self._messages[(chat_id, message["message_id"])] = message
        return message

    def _store_bot_message(self, chat: JSON, params: JSON, content: JSON) -> JSON:
        """Store a message the bot sent (reply and inline keyboard applied); return a copy."""
        if reply := self._replied_message(chat["id"], params):
            content["reply_to_message"] = copy.deepcopy(reply)
        if markup := _inline_markup(params.get("reply_markup")):
            content["reply_markup"] = markup
        message = self._store_message(chat["id"], self.bot_user, content)
        self._bot_messages.append((chat["id"], message["message_id"]))
        return copy.deepcopy(message)

    def _replied_message(self, chat_id: int, params: JSON) -> JSON | None:
        reply = params.get("reply_parameters") or {}
        message_id = reply.get("message_id", params.get("reply_to_message_id"))
        if message_id is None:
            return None
        message = self._messages.get((reply.get("chat_id", chat_id), message_id))
        allow_missing = reply.get("allow_sending_without_reply", params.get("allow_sending_without_reply"))
        if message is None and not allow_missing:
            raise bad_request("message to be replied not found")
        return message

    def _checked_text(self, params: JSON) -> tuple[str, list[JSON]]:
        """Render ``text`` like Telegram and apply its emptiness/length limits."""
        text, entities = render_text(params.get("text", ""), params.get("parse_mode"), params.get("entities"))
        if not text.strip():
            raise bad_request("message text is empty")
        if len(text) > MAX_TEXT_LENGTH:
            raise bad_request("message is too long")
        return text, entities

    def _check_pressable(self, key: ChatKey, current: JSON | None, data: str) -> None:
        if current is None or key in self._deleted:
            raise ValueError(f"press_button: message {key} does not exist (or was deleted)")
        if current["from"]["id"] != self.bot_id:
            raise ValueError(f"press_button: message {key} was not sent by the bot")
        buttons = _callback_data(current)
        if data not in buttons:
            raise ValueError(f"press_button: {data!r} is not among the message's buttons {buttons}")

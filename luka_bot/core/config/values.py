"""Rules every settings area shares: what a blank value means, what an address must look like."""

from __future__ import annotations

from typing import Any


def drop_blank_values(data: Any) -> Any:
    """Blank values (`WEBHOOK_PORT=`, `OLLAMA_URL=  `) mean "unset": the setting keeps its default.

    `.env.example` lists every setting, most of them empty, so an empty value must never stop
    start-up nor become a value (an empty `OLLAMA_URL` would be the base URL `/v1`).
    """
    if not isinstance(data, dict):
        return data
    return {name: value for name, value in data.items() if not (isinstance(value, str) and not value.strip())}


def http_url(value: str | None) -> str | None:
    """An `http(s)://` address without surrounding blanks; anything else is refused, naming the setting."""
    if value is None:
        return None
    value = value.strip()
    if not value.startswith(("http://", "https://")) or not value.split("://", 1)[1].strip("/"):
        raise ValueError("must be an http:// or https:// URL")  # the value is not echoed: it may hold a password
    return value


def comma_list(value: Any) -> Any:
    """`"1, 2;3"` → `["1", "2", "3"]` (commas or semicolons); other values unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
    return value


def json_value(value: Any) -> Any:
    """A JSON text (from the environment) decoded; values given in Python pass as they are."""
    if not isinstance(value, str):
        return value
    import json

    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        # the message gives the position, never the text (it may hold an api_key)
        raise ValueError(f"not valid JSON ({error.msg} at character {error.pos})") from None

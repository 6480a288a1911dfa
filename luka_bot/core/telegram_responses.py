"""Keep aiogram's `Response[T]` models alive, so they are not rebuilt after every garbage collection.

aiogram's `check_response` builds `Response[method.__returning__]` for each Bot API call; pydantic
keeps parametrized generic models in a weak cache, so once the collector frees one, the next
call builds it again (schema and validator: milliseconds of CPU, 14 % of a message's CPU in
`benchmarks/message_cost.py`). A request middleware holding a strong reference per return type
turns that into a cache hit.
"""

from __future__ import annotations

from typing import Any

from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.methods.base import Response, TelegramMethod


class PinResponseModels(BaseRequestMiddleware):
    def __init__(self) -> None:
        self.pinned: dict[Any, type] = {}

    async def __call__(self, make_request: NextRequestMiddlewareType[Any], bot: Any,
                       method: TelegramMethod[Any]) -> Any:
        returning = method.__returning__
        if returning not in self.pinned:
            self.pinned[returning] = Response[returning]  # type: ignore[valid-type]
        return await make_request(bot, method)

"""Conversation threads and their recent history, kept in the bot's store (Redis or memory).

Per user: the current thread id, a bounded list of threads (id, name) and, per thread, the
last `max_messages` turns. Everything expires `ttl` seconds after its last use. Each stored
turn carries an id (the user's message's, else a random one), so a turn written back twice after a
Redis outage is kept once, and a message handled again (its process died before the answer went
out) finds the answer already stored for it (`recall`).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart

from luka_bot.services.bot_store import BotStore

MAX_THREADS = 20


@dataclass(frozen=True)
class Thread:
    id: str
    name: str
    created: float


class Conversations:
    def __init__(self, store: BotStore, *, max_messages: int = 20, ttl: float = 7 * 24 * 3600):
        self.store = store
        self.max_messages = max_messages
        self.ttl = ttl

    async def current_thread(self, user_id: int) -> str | None:
        (thread_id,) = await self.store.get_many([f"thread:current:{user_id}"])
        return thread_id

    async def start_thread(self, user_id: int) -> str:
        thread_id = secrets.token_hex(4)
        await self.store.set(f"thread:current:{user_id}", thread_id, self.ttl)
        return thread_id

    async def name_thread(self, user_id: int, thread_id: str, name: str) -> Thread:
        thread = Thread(thread_id, name, time.time())
        await self.store.push_bounded(f"threads:{user_id}", json.dumps(thread.__dict__), max_len=MAX_THREADS,
                                      ttl=self.ttl)
        return thread

    async def threads(self, user_id: int) -> list[Thread]:
        items = [Thread(**json.loads(raw)) for raw in await self.store.get_list(f"threads:{user_id}")]
        return list(reversed(items))

    async def named(self, user_id: int, thread_id: str) -> bool:
        return any(thread.id == thread_id for thread in await self.threads(user_id))

    async def history(self, user_id: int, thread_id: str) -> list[ModelMessage]:
        return (await self.recall(user_id, thread_id, None))[0]

    async def recall(self, user_id: int, thread_id: str,
                     message_id: int | None) -> tuple[list[ModelMessage], str | None]:
        """The thread's history, and the answer already stored for the user's message `message_id` (or None)."""
        messages: list[ModelMessage] = []
        answered = None
        for raw in await self.store.get_list(f"history:{user_id}:{thread_id}"):
            turn = json.loads(raw)
            if message_id is not None and turn.get("id") == f"m{message_id}a":
                answered = turn["text"]
            if turn["role"] == "user":
                messages.append(ModelRequest(parts=[UserPromptPart(content=turn["text"])]))
            else:
                messages.append(ModelResponse(parts=[TextPart(content=turn["text"])]))
        return messages, answered

    async def add_turn(self, user_id: int, thread_id: str, question: str, answer: str, *,
                       message_id: int | None = None) -> None:
        turn = f"m{message_id}" if message_id is not None else secrets.token_hex(6)
        await self.store.push_bounded(
            f"history:{user_id}:{thread_id}",
            json.dumps({"role": "user", "text": question, "id": f"{turn}q"}),
            json.dumps({"role": "assistant", "text": answer, "id": f"{turn}a"}),
            max_len=self.max_messages, ttl=self.ttl)

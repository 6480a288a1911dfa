"""Group moderation: a structured verdict (allow / warn / delete) from the moderation model.

Fails open: when no provider can judge, the message is allowed and that is logged.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_ai import Agent

from .llm_model_factory import LLMModelFactory, create_moderation_model

logger = logging.getLogger(__name__)

MODERATION_PROMPT = (
    "You moderate a Telegram group. Judge the user's message. Answer with action 'delete' only for spam, "
    "scams, advertising links, or abuse; 'warn' for borderline rudeness; otherwise 'allow'. "
    "Give a short reason (a few words) in the language of the message."
)


class ModerationVerdict(BaseModel):
    action: Literal["allow", "warn", "delete"]
    reason: str = Field(default="", max_length=200)


ALLOW_UNJUDGED = ModerationVerdict(action="allow", reason="not judged")


async def evaluate_message_moderation(text: str, *, chat_id: int | None = None,
                                      models: LLMModelFactory | None = None) -> ModerationVerdict:
    """The verdict for one group message; `allow` when no provider can judge (fail open)."""
    model = models.moderation(context=f"moderation:{chat_id}") if models else await create_moderation_model()
    agent = Agent(model, output_type=ModerationVerdict, instructions=MODERATION_PROMPT)
    try:
        return (await agent.run(text[:4000])).output
    except Exception as error:  # noqa: BLE001 - fail open, never block a group on an LLM outage
        logger.warning("Moderation not available for chat %s, message allowed: %s", chat_id,
                       type(error).__name__)
        return ALLOW_UNJUDGED

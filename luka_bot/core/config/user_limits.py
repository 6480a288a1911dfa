"""What one user's messages may cost: a rate limit shared by every replica, an optional daily token quota.

Admins (ADMIN_IDS) are exempt from both. The quota's day is the provider budgets' calendar day
(midnight in LLM_BUDGET_TIMEZONE). See docs/operations.md, "Per-user limits".
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class UserLimitSettings(BaseModel):
    # Messages answered per user: USER_RATE_LIMIT per USER_RATE_WINDOW seconds, USER_RATE_BURST of them at once
    # (GCRA). Past it a message costs no LLM call and the user gets one short notice per window. 0 = no limit.
    USER_RATE_LIMIT: int = Field(5, ge=0, le=100_000)
    USER_RATE_WINDOW: float = Field(10.0, ge=1, le=86_400)
    USER_RATE_BURST: int = Field(3, ge=1, le=100_000)
    # LLM tokens (prompt + answer, as the providers report them) one user may spend per day; 0 = no quota.
    USER_DAILY_TOKENS: int = Field(0, ge=0)

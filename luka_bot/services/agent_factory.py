"""The conversation agent: a pydantic-ai `Agent` with a few basic tools, on the fallback model."""

from __future__ import annotations

import ast
import math
import operator
from datetime import UTC, datetime

from pydantic_ai import Agent, Tool
from pydantic_ai.capabilities import RaiseContentFilterError

from luka_bot.core.user_limits import CountTokens
from plugins.llm_fallback import ModelFactory

SYSTEM_PROMPT = (
    "You are Luka, a helpful assistant in a Telegram chat. Answer concisely in the user's language. "
    "Use the tools for the current date/time and for arithmetic instead of guessing."
)

_OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.USub: operator.neg, ast.UAdd: operator.pos,
}


def current_datetime() -> str:
    """The current date and time in UTC (ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


MAX_EXPRESSION_LENGTH = 500
MAX_RESULT_BITS = 10_000
"""Integer results are at most this long (about 3,000 decimal digits): refused before they are computed."""
TOO_LARGE = "result too large (more than about 3000 digits)"


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / // % ** and parentheses, e.g. "(2+3)*4"."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        return f"error: expression longer than {MAX_EXPRESSION_LENGTH} characters"
    try:
        return str(_evaluate(ast.parse(expression, mode="eval").body))
    except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, TypeError, RecursionError, MemoryError) as error:
        return f"error: {error}"


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        _check_result_size(node.op, left, right)
        return _OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ValueError("only numbers and + - * / // % ** are allowed")


def _check_result_size(op: ast.operator, left: object, right: object) -> None:
    """Refuse, before computing it, an integer result that may be longer than MAX_RESULT_BITS.

    Only integers grow without bound (floats overflow at once, raising OverflowError), and only
    `*` and `**` make them much longer than their operands. The estimate is an upper bound
    (up to float rounding of log2), so every intermediate result stays within the bound and one
    evaluation costs at most a few hundred operations on 10,000-bit numbers.
    """
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    if isinstance(op, ast.Pow):
        if right < 0 or abs(left) <= 1:
            return  # a float, or 0 / 1 / -1: small whatever the exponent
        bits = right * math.log2(abs(left)) + 1
    elif isinstance(op, ast.Mult):
        bits = left.bit_length() + right.bit_length()
    else:
        bits = max(left.bit_length(), right.bit_length()) + 1
    if bits > MAX_RESULT_BITS:
        raise ValueError(TOO_LARGE)


# Every tool declares whether running it acts on the world (sends, writes, pays…). A streamed reply
# cut after its first token is restarted on the next provider only when no tool with side effects
# ran (luka_bot.services.streaming.reply): running those twice could act twice.
TOOLS = (
    Tool(current_datetime, metadata={"side_effects": False}),
    Tool(calculate, metadata={"side_effects": False}),
)


CAPABILITIES = [RaiseContentFilterError(), CountTokens()]
"""A reply the provider's content filter stopped is a refusal (raised), never an answer shown and stored as
if complete: DESIGN.md, "never route around a safety refusal". Each run's tokens count against the user
served (`luka_bot.core.user_limits`: the daily quota)."""


def tool_has_side_effects(name: str) -> bool:
    """Whether the agent's tool `name` has side effects (an unknown tool is assumed to have some)."""
    tool = next((t for t in TOOLS if t.name == name), None)
    return tool is None or bool((tool.metadata or {}).get("side_effects", True))


async def create_static_agent_with_basic_tools(user_id: int, models: ModelFactory | None = None) -> Agent[None, str]:
    """The agent for one user's conversation (seed name), using the fallback-aware model."""
    if models is None:
        from .llm_model_factory import create_llm_model_with_fallback

        model = await create_llm_model_with_fallback(context=f"chat:{user_id}")
        return Agent(model, instructions=SYSTEM_PROMPT, tools=TOOLS, name="luka", capabilities=CAPABILITIES)
    # One agent serves every conversation (an Agent is reusable and safe to run concurrently; the
    # history is per run): building it per message cost ~1 ms of CPU (benchmarks/message_cost.py).
    return models.reused("chat_agent", lambda: Agent(models.create(context="chat"), instructions=SYSTEM_PROMPT,
                                                    capabilities=CAPABILITIES,
                                                    tools=TOOLS, name="luka"))

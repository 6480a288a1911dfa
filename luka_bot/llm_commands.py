"""`luka-bot llm status|check|force|clear`: the admin commands, from a shell.

They build the fallback service exactly as the bot does (same settings, same store, same key
prefix), so `force` and `clear` change what every bot process sharing `REDIS_URL` sees next.
Without a shared store they refuse to pretend: a running bot's in-memory state is out of
reach, and a Redis that does not answer means nothing was changed.

Exit codes: 0 done; 1 the store (or, for `check`, the primary) did not work; 2 bad arguments
or configuration — nothing changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from luka_bot.core.config import Settings
from luka_bot.core.logging_setup import setup_logging
from luka_bot.services.llm_provider_fallback import create_llm_provider_fallback
from luka_bot.services.state_stores import redis_options
from plugins.llm_fallback import FailureKind, LLMProviderFallback
from plugins.llm_fallback.admin import DEFAULT_FORCE_SECONDS
from plugins.llm_fallback.engine import AUTH_SETTING_HINT, MAX_FORCE_SECONDS, MIN_FORCE_SECONDS
from plugins.llm_fallback.texts import duration

OK, FALLBACK_ONLY, NOTHING_WORKS = 0, 1, 2
STORE_DOWN, BAD_USAGE = 1, 2


class UsageError(Exception):
    """Bad arguments or a store the command cannot act on: exit code 2, nothing changed."""


class StoreDown(Exception):
    """Redis does not answer: exit code 1, nothing changed."""


def run(name: str, settings: Settings, args: argparse.Namespace) -> int:
    setup_logging("DEBUG" if settings.LOG_LEVEL == "DEBUG" else "ERROR", settings.secret_values())
    try:
        return asyncio.run(COMMANDS[name](settings, args))
    except UsageError as error:
        print(f"luka-bot llm {name}: {error}", file=sys.stderr)
        return BAD_USAGE
    except StoreDown as error:
        print(f"luka-bot llm {name}: {error}", file=sys.stderr)
        return STORE_DOWN


# --- status -------------------------------------------------------------------------------------------


async def status(settings: Settings, args: argparse.Namespace) -> int:
    _require_bot_namespace(settings)
    fallback = create_llm_provider_fallback(settings)
    try:
        stats = await fallback.get_provider_stats()
    finally:
        await fallback.aclose()
    if stats["store"] == "degraded":
        raise StoreDown("Redis (REDIS_URL) is not answering: the bot's provider state cannot be read")
    if stats["store"] == "memory":
        print("note: REDIS_URL is not set, so this is a fresh process's view, not a running bot's "
              "(its state lives in its own memory)", file=sys.stderr)
    print(json.dumps(stats, indent=2, ensure_ascii=False) if args.json else render_status(stats))
    return OK


def render_status(stats: dict[str, Any]) -> str:
    """`/llm_status` as a table."""
    rows = [("#", "PROVIDER", "STATE", "COOLDOWN LEFT", "FAILURES", "LAST ERROR")]
    for index, (name, health) in enumerate(stats["provider_health"].items(), start=1):
        last = "-"
        if health["last_error"]:
            last = f"{duration(health['last_error_seconds_ago'] or 0)} ago: {health['last_error']}"
        state = health["state"].replace("_", " ")
        if health["state"] == "not_configured" and name in AUTH_SETTING_HINT:
            state += f" (set {AUTH_SETTING_HINT[name]})"
        if health["unavailable_models"]:
            state += f"; models not found: {', '.join(health['unavailable_models'])}"
        left = duration(health["cooldown_seconds_left"]) if health["cooldown_seconds_left"] else "-"
        rows.append((str(index), name, state, left, str(health["failures"]), last))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
             for row in rows]
    forced = "none"
    if stats["forced_provider"]:
        forced = f"{stats['forced_provider']}, {duration(stats['forced_seconds_left'] or 0)} left"
    lines += [
        "",
        f"Preferred (cached): {stats['preferred_provider'] or 'none'}",
        f"Forced: {forced}",
        f"State store: {stats['store']}",
    ]
    return "\n".join(lines)


# --- check --------------------------------------------------------------------------------------------


async def check(settings: Settings, args: argparse.Namespace) -> int:
    fallback = create_llm_provider_fallback(settings)
    try:
        results = await fallback.check_providers(timeout=args.timeout)
    finally:
        await fallback.aclose()
    working = []
    for index, name in enumerate(fallback.order):
        role = "primary" if index == 0 else "fallback"
        if name not in fallback.configured:
            verdict = f"⚪ not configured: set {AUTH_SETTING_HINT.get(name, 'its api_key')}"
        elif results[name] is None:
            verdict = "✅ works"
            working.append(name)
        else:
            verdict = f"❌ {results[name]}{_misconfigured(name, results[name])}"
        print(f"{name:<12} {role:<9} {verdict}")
    if fallback.primary in working:
        print(f"The primary ({fallback.primary}) works.")
        return OK
    if working:
        print(f"Only a fallback works: {', '.join(working)}.")
        return FALLBACK_ONLY
    print("No provider works.")
    return NOTHING_WORKS


def _misconfigured(provider: str, reason: str) -> str:
    """A hint when the failure is the configuration's, not the provider's."""
    if reason.startswith(f"{FailureKind.AUTH.value}:"):
        return f" — misconfigured: check {AUTH_SETTING_HINT.get(provider, 'its api_key in LLM_EXTRA_PROVIDERS')}"
    if reason.startswith(f"{FailureKind.MODEL_MISSING.value}:"):
        return " — misconfigured: none of its models exist there (AVAILABLE_PROVIDERS, *_MODEL_NAME)"
    return ""


# --- force / clear --------------------------------------------------------------------------------------


def _force_arguments(fallback: LLMProviderFallback, provider: str, seconds: int | None) -> tuple[str, int]:
    name = provider.strip().lower()
    if name not in fallback.order:
        raise UsageError(f"unknown provider {provider!r}; configured: {', '.join(fallback.configured)}")
    if name not in fallback.configured:
        raise UsageError(f"provider {name!r} is not configured (set {AUTH_SETTING_HINT.get(name, 'its api_key')})")
    seconds = DEFAULT_FORCE_SECONDS if seconds is None else seconds
    if not MIN_FORCE_SECONDS <= seconds <= MAX_FORCE_SECONDS:
        raise UsageError(f"seconds must be between {MIN_FORCE_SECONDS} and {MAX_FORCE_SECONDS}, not {seconds}")
    return name, seconds


def _require_bot_namespace(settings: Settings) -> None:
    """The bot's keys are under its bot id (from BOT_TOKEN): without it we would look elsewhere."""
    if redis_options(settings).configured and settings.BOT_TOKEN is None and not settings.REDIS_PREFIX:
        raise UsageError("BOT_TOKEN is not set: the bot keeps its provider state in Redis under its bot id, so give "
                         "this command the bot's settings (its .env, or BOT_TOKEN / REDIS_PREFIX). Nothing changed.")


async def _require_shared_store(fallback: LLMProviderFallback) -> None:
    kind = (await fallback.get_provider_stats())["store"]
    if kind == "memory":
        raise UsageError("REDIS_URL is not set: a running bot keeps its provider state in its own memory, out of "
                         "this command's reach. Use the admin command in Telegram, or give both the same REDIS_URL. "
                         "Nothing changed.")
    if kind == "degraded":
        raise StoreDown("Redis (REDIS_URL) is not answering: nothing changed")


def _check_written(fallback: LLMProviderFallback) -> None:
    if fallback.store.kind == "degraded":
        raise StoreDown("Redis stopped answering during the change: the bot may not see it; run it again")


async def force(settings: Settings, args: argparse.Namespace) -> int:
    _require_bot_namespace(settings)
    fallback = create_llm_provider_fallback(settings)
    try:
        provider, seconds = _force_arguments(fallback, args.provider, args.seconds)
        await _require_shared_store(fallback)
        until = await fallback.force_provider(provider, seconds)
        _check_written(fallback)
    finally:
        await fallback.aclose()
    when = datetime.fromtimestamp(until, tz=UTC).strftime("%H:%M:%S UTC")
    print(f"✅ {provider} forced for {duration(seconds)} (until {when}); the other providers stay behind it "
          "as fallbacks.")
    return OK


async def clear(settings: Settings, args: argparse.Namespace) -> int:
    _require_bot_namespace(settings)
    fallback = create_llm_provider_fallback(settings)
    try:
        await _require_shared_store(fallback)
        cleared = await fallback.clear_cache()
        _check_written(fallback)
    finally:
        await fallback.aclose()
    print(f"🧹 Cleared. Preferred provider: {cleared['preferred'] or 'none'}; forced provider: "
          f"{cleared['forced'] or 'none'}; cooldowns: {', '.join(cleared['cooldowns']) or 'none'}.")
    return OK


COMMANDS = {"status": status, "check": check, "force": force, "clear": clear}

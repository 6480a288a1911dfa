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

from luka_bot.core.config import Settings
from luka_bot.core.logging_setup import setup_logging
from luka_bot.services.inbox import read_inbox_stats
from luka_bot.services.llm_provider_fallback import create_llm_provider_fallback
from luka_bot.services.state_stores import redis_options
from plugins.llm_fallback import (
    DEFAULT_FORCE_SECONDS,
    FailureKind,
    FallbackStatus,
    ForceError,
    LLMProviderFallback,
    ProviderState,
    check_force,
)
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
        current = await fallback.status()
    finally:
        await fallback.aclose()
    if current.store == "degraded":
        raise StoreDown("Redis (REDIS_URL) is not answering: the bot's provider state cannot be read")
    if current.store == "memory":
        print("note: REDIS_URL is not set, so this is a fresh process's view, not a running bot's "
              "(its state lives in its own memory)", file=sys.stderr)
    inbox = await read_inbox_stats(settings)
    if args.json:
        print(json.dumps({**current.as_dict(), "inbox": inbox.as_dict() if inbox else None}, indent=2,
                         ensure_ascii=False))
    else:
        print(render_status(current) + (f"\n{inbox.summary()}" if inbox else ""))
    return OK


def render_status(current: FallbackStatus) -> str:
    """`/llm_status` as a table."""
    rows = [("#", "PROVIDER", "STATE", "COOLDOWN LEFT", "FAILURES", "LAST ERROR")]
    for index, provider in enumerate(current.providers, start=1):
        last = "-"
        if provider.last_error:
            last = f"{duration(provider.last_error_seconds_ago or 0)} ago: {provider.last_error}"
        state = provider.state.value.replace("_", " ")
        if provider.state is ProviderState.NOT_CONFIGURED and provider.setting_hint:
            state += f" (set {provider.setting_hint})"
        if provider.unavailable_models:
            state += f"; models not found: {', '.join(provider.unavailable_models)}"
        if provider.ready is not None:
            checked = f"standby check {duration(provider.ready_checked_seconds_ago or 0)} ago"
            state += f"; {checked}: ready" if provider.ready else f"; {checked}: can't answer"
            if not provider.ready and not provider.last_error:
                last = provider.ready_error or "-"
        left = duration(provider.cooldown_seconds_left) if provider.cooldown_seconds_left else "-"
        if provider.next_probe_seconds is not None:
            left += f" (probe in {duration(provider.next_probe_seconds)})"
        rows.append((str(index), provider.name, state, left, str(provider.failures), last))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
             for row in rows]
    forced = "none"
    if current.forced_provider:
        forced = f"{current.forced_provider}, {duration(current.forced_seconds_left or 0)} left"
    lines += [
        "",
        f"Preferred (cached): {current.preferred_provider or 'none'}",
        f"Forced: {forced}",
        f"State store: {current.store}",
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
    hints = fallback.providers.setting_hints
    for index, name in enumerate(fallback.order):
        role = "primary" if index == 0 else "fallback"
        if name not in fallback.configured:
            verdict = f"⚪ not configured: set {hints.get(name, 'its api_key')}"
        elif results[name] is None:
            verdict = "✅ works"
            working.append(name)
        else:
            verdict = f"❌ {results[name]}{_misconfigured(results[name], hints.get(name))}"
        print(f"{name:<12} {role:<9} {verdict}")
    if fallback.primary in working:
        print(f"The primary ({fallback.primary}) works.")
        return OK
    if working:
        print(f"Only a fallback works: {', '.join(working)}.")
        return FALLBACK_ONLY
    print("No provider works.")
    return NOTHING_WORKS


def _misconfigured(reason: str, setting: str | None) -> str:
    """A hint when the failure is the configuration's, not the provider's."""
    if reason.startswith(f"{FailureKind.AUTH.value}:"):
        return f" — misconfigured: check {setting or 'its api_key in LLM_EXTRA_PROVIDERS'}"
    if reason.startswith(f"{FailureKind.MODEL_MISSING.value}:"):
        return " — misconfigured: none of its models exist there (AVAILABLE_PROVIDERS, *_MODEL_NAME)"
    return ""


# --- force / clear --------------------------------------------------------------------------------------


def _force_arguments(fallback: LLMProviderFallback, provider: str, seconds: int | None) -> tuple[str, int]:
    name = provider.strip().lower()
    seconds = DEFAULT_FORCE_SECONDS if seconds is None else seconds
    try:
        check_force(name, seconds, order=fallback.order, configured=fallback.configured,
                    setting_hints=fallback.providers.setting_hints)
    except ForceError as error:
        raise UsageError(str(error)) from None
    return name, seconds


def _require_bot_namespace(settings: Settings) -> None:
    """The bot's keys are under its bot id (from BOT_TOKEN): without it we would look elsewhere."""
    if redis_options(settings).configured and settings.BOT_TOKEN is None and not settings.REDIS_PREFIX:
        raise UsageError("BOT_TOKEN is not set: the bot keeps its provider state in Redis under its bot id, so give "
                         "this command the bot's settings (its .env, or BOT_TOKEN / REDIS_PREFIX). Nothing changed.")


async def _require_shared_store(fallback: LLMProviderFallback) -> None:
    kind = (await fallback.status()).store
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

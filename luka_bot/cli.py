"""`luka-bot` (also `python -m luka_bot`): run the bot, steer its LLM providers, chat in a terminal.

    luka-bot [run]                          the bot (long polling; webhook mode with WEBHOOK_URL)
    luka-bot llm status [--json]            provider health as the running bot sees it
    luka-bot llm check [--timeout S]        a minimal completion per provider (exit 0 / 1 / 2)
    luka-bot llm force PROVIDER [SECONDS]   put a provider first, for every process on the store
    luka-bot llm clear                      forget preferred provider, cooldowns and force
    luka-bot console                        chat with the bot here, without Telegram

Settings are read and validated before the heavy parts (aiogram, pydantic-ai) are imported,
so a configuration mistake is reported at once: one line naming the setting, exit code 2.
Exit code 2 also means bad arguments (argparse's convention); nothing is changed then.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from luka_bot.core.config import ConfigError, Settings, load_settings

Command = Callable[[Settings, argparse.Namespace], int]


def _version() -> str:
    try:
        return f"luka-bot {version('luka-bot')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "luka-bot (not installed)"


def _parser(parent: argparse._SubParsersAction | None, name: str, help_: str,
            **kwargs: object) -> argparse.ArgumentParser:
    """A (sub)parser with `--version`, like every level of `luka-bot` has."""
    if parent is None:
        parser = argparse.ArgumentParser(prog=name, description=help_, **kwargs)  # type: ignore[arg-type]
    else:
        parser = parent.add_parser(name, help=help_, description=help_, **kwargs)  # type: ignore[arg-type]
    parser.add_argument("--version", action="version", version=_version())
    return parser


def build_parser() -> argparse.ArgumentParser:
    root = _parser(None, "luka-bot", "A Telegram bot whose LLM calls fall back between providers.",
                   epilog="Without a command: run the bot. Settings come from the environment and .env.")
    root.set_defaults(command=run_command)
    commands = root.add_subparsers(title="commands", metavar="COMMAND")

    run = _parser(commands, "run", "Run the bot (long polling; webhook mode when WEBHOOK_URL is set).")
    run.set_defaults(command=run_command)

    llm = _parser(commands, "llm", "The LLM providers, as every process sharing REDIS_URL sees them.")
    llm.set_defaults(command=lambda settings, args: _usage(llm))
    llm_commands = llm.add_subparsers(title="commands", metavar="COMMAND")
    status = _parser(llm_commands, "status", "Provider health, cooldowns, preferred and forced provider.")
    status.add_argument("--json", action="store_true", help="print the status as JSON (for scripts)")
    status.set_defaults(command=_llm("status"))
    check = _parser(llm_commands, "check",
                    "Ask each configured provider for a minimal completion now (recorded like the admin's "
                    "'Check now' button). Exit code: 0 the primary works, 1 only a fallback works, 2 none does.")
    check.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                       help="how long each provider gets to answer (default: 10)")
    check.set_defaults(command=_llm("check"))
    force = _parser(llm_commands, "force", "Put a provider first (the others stay behind it as fallbacks).")
    force.add_argument("provider", help="a configured provider, e.g. ollama or openai")
    force.add_argument("seconds", nargs="?", type=int, default=None,
                       help="how long (default 1800; 10 … 86400)")
    force.set_defaults(command=_llm("force"))
    clear = _parser(llm_commands, "clear", "Forget the preferred provider, every cooldown and the force.")
    clear.set_defaults(command=_llm("clear"))

    console = _parser(commands, "console",
                      "Chat with the bot in this terminal: the same handlers and fallback, no Telegram. Each "
                      "reply is tagged with the provider that answered; admin commands are allowed. "
                      "Type #N to press button N of the last message; Ctrl-D quits.")
    console.add_argument("--lang", default=None, help="your language code (default: DEFAULT_LANGUAGE)")
    console.add_argument("--user-id", type=int, default=None,
                         help="your Telegram-like user id (default: the first ADMIN_IDS entry, else 1)")
    console.set_defaults(command=console_command)
    return root


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _llm(name: str) -> Command:
    def command(settings: Settings, args: argparse.Namespace) -> int:
        from luka_bot import llm_commands  # aiogram and pydantic-ai load only once settings are valid

        return llm_commands.run(name, settings, args)

    return command


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    if settings.BOT_TOKEN is None:
        raise ConfigError("BOT_TOKEN is not set: put it in the environment or in .env")
    from luka_bot import startup  # aiogram and pydantic-ai load only once settings are valid

    return startup.main(settings)


def console_command(settings: Settings, args: argparse.Namespace) -> int:
    from luka_bot import console

    return console.main(settings, lang=args.lang, user_id=args.user_id)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.command(load_settings(), args)
    except ConfigError as error:
        print(f"luka-bot: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)

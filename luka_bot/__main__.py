"""`python -m luka_bot`: the `luka-bot` command (without arguments: run the bot)."""

from luka_bot.cli import main

if __name__ == "__main__":
    main()

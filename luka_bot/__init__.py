"""luka_bot: a Telegram bot whose LLM calls fail over between providers."""

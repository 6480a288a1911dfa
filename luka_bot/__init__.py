"""luka_bot: a Telegram bot whose LLM calls fall back between providers."""

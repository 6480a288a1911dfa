"""Reusable aiogram plugins (no import of `luka_bot`)."""

"""Translation hook for the plugin's user-visible texts.

The texts are msgids in the bot's `messages` domain (`locales/<lang>/LC_MESSAGES`); when
the dispatcher has no `aiogram.utils.i18n` set up, they are shown as written (English).
"""

from __future__ import annotations

from aiogram.utils.i18n import I18n


def _(text: str, /, **params: object) -> str:
    """gettext through the current `I18n` (if any), then `str.format(**params)`."""
    i18n = I18n.get_current(no_error=True)
    translated = i18n.gettext(text) if i18n is not None else text
    return translated.format(**params) if params else translated


def gettext_for(locale: str | None, text: str, /, **params: object) -> str:
    """Like `_`, in an explicit locale (admin alerts are sent outside any user's context);
    `locale=None` is the current one."""
    i18n = I18n.get_current(no_error=True)
    translated = i18n.gettext(text, locale=locale) if i18n is not None else text
    return translated.format(**params) if params else translated


def duration(seconds: float, locale: str | None = None) -> str:
    """`1h 2m`, `4m 5s`, `9s` (translated units)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return gettext_for(locale, "{hours}h {minutes}m", hours=hours, minutes=minutes)
    if minutes:
        return gettext_for(locale, "{minutes}m {seconds}s", minutes=minutes, seconds=secs)
    return gettext_for(locale, "{seconds}s", seconds=secs)

"""Translations: the `messages` catalogs (en, ru), loaded without writing anything to disk.

- Installed from a wheel: the `.mo` files compiled at build time (`setup.py`) ship in
  `luka_bot/locales/<lang>/LC_MESSAGES/`.
- In a source checkout (or an editable install): the `.po` sources in the top-level
  `locales/` are compiled in memory at start-up, so an edited translation shows at once.
"""

from __future__ import annotations

import gettext
from io import BytesIO
from pathlib import Path

from aiogram.utils.i18n import I18n
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from luka_bot.core.locale_files import DOMAIN, locales_dir


def compile_po(po_path: Path) -> bytes:
    """One `.po` file as `.mo` bytes (the language is the `<lang>/LC_MESSAGES/` folder's name)."""
    with po_path.open("rb") as po_file:
        catalog = read_po(po_file, locale=po_path.parts[-3], domain=DOMAIN)
    mo = BytesIO()
    write_mo(mo, catalog)
    return mo.getvalue()


class SourceI18n(I18n):
    """aiogram's `I18n` over `.po` sources, compiled in memory (aiogram's own reads `.mo` files)."""

    # aiogram's gettext() looks the current instance up on `I18n`, not on a subclass.
    get_current = I18n.get_current
    set_current = I18n.set_current
    reset_current = I18n.reset_current

    def find_locales(self) -> dict[str, gettext.GNUTranslations]:
        return {po.parts[-3]: gettext.GNUTranslations(BytesIO(compile_po(po)))
                for po in sorted(self.path.glob(f"*/LC_MESSAGES/{self.domain}.po"))}


def build_i18n(default_locale: str = "en", path: Path | None = None) -> I18n:
    path = path or locales_dir()
    if any(path.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        return SourceI18n(path=path, default_locale=default_locale, domain=DOMAIN)
    return I18n(path=path, default_locale=default_locale, domain=DOMAIN)

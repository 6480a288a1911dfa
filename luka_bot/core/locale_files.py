"""Where the translation catalogs are, and which languages ship: no aiogram, no Babel.

The settings check `DEFAULT_LANGUAGE` against these before the heavy imports, so this module
stays light; `i18n.py` loads the catalogs themselves.
"""

from __future__ import annotations

from pathlib import Path

DOMAIN = "messages"
PACKAGED_LOCALES = Path(__file__).resolve().parents[1] / "locales"
"""Compiled catalogs inside the installed package (present only in a built wheel)."""
SOURCE_LOCALES = Path(__file__).resolve().parents[2] / "locales"
"""The `.po` sources of a source checkout."""


def locales_dir() -> Path:
    """Where this installation's catalogs are: compiled in the package, else the source tree."""
    return PACKAGED_LOCALES if any(PACKAGED_LOCALES.glob(f"*/LC_MESSAGES/{DOMAIN}.mo")) else SOURCE_LOCALES


def shipped_languages(path: Path | None = None) -> list[str]:
    """The languages with a catalog (`<lang>/LC_MESSAGES/messages.po` or `.mo`), sorted."""
    path = path or locales_dir()
    return sorted({catalog.parts[-3] for catalog in path.glob(f"*/LC_MESSAGES/{DOMAIN}.[pm]o")})

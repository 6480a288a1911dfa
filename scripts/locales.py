"""Extract msgids into locales/messages.pot and merge them into each language's messages.po.

    python scripts/locales.py          # after changing user-visible texts; then translate the new entries

A file whose messages did not change is left as it was (no new POT-Creation-Date, no
reordering of hand-added entries), so the tree stays clean. `.mo` files are never committed: a source checkout compiles the `.po` files in
memory at start-up (luka_bot.core.i18n), a wheel ships them compiled at build time (setup.py).
"""

from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path

from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[1]
LOCALES = ROOT / "locales"
LANGUAGES = ("en", "ru")
KEYWORDS = ["-k", "_", "-k", "gettext", "-k", "gettext_for:2", "-k", "N_"]


def messages(text: str) -> set[tuple[object, ...]]:
    """What a catalog says, whatever its order, dates or line wrapping."""
    catalog = read_po(StringIO(text))
    return {(m.id, m.string, m.context, tuple(sorted(m.flags)), m.id in catalog.obsolete)
            for m in [*catalog, *catalog.obsolete.values()] if m.id}


def babel(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", *args], cwd=ROOT, check=True)


def main() -> None:
    pot = LOCALES / "messages.pot"
    pos = [LOCALES / lang / "LC_MESSAGES" / "messages.po" for lang in LANGUAGES]
    before = {path: path.read_text(encoding="utf-8") for path in [pot, *pos] if path.exists()}
    babel("extract", *KEYWORDS, "--no-location", "--omit-header", "-o", str(pot), "luka_bot", "plugins")
    for lang, po in zip(LANGUAGES, pos, strict=True):
        action = "update" if po.exists() else "init"
        babel(action, "-i", str(pot), "-d", str(LOCALES), "-l", lang, "-D", "messages", "--no-wrap")
    for path, old in before.items():
        if messages(path.read_text(encoding="utf-8")) == messages(old):
            path.write_text(old, encoding="utf-8")  # no message changed: keep the file as it was


if __name__ == "__main__":
    main()

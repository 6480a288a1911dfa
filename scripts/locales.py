"""Extract msgids into locales/messages.pot and merge them into each language's messages.po.

    python scripts/locales.py          # after changing user-visible texts; then translate the new entries

`.mo` files are compiled at start-up (luka_bot.core.i18n.compile_locales), not committed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCALES = ROOT / "locales"
KEYWORDS = ["-k", "_", "-k", "gettext", "-k", "gettext_for:2", "-k", "N_"]


def main() -> None:
    pot = LOCALES / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", *KEYWORDS, "--no-location",
                    "--omit-header", "-o", str(pot), "luka_bot", "plugins"], cwd=ROOT, check=True)
    for lang in ("en", "ru"):
        po = LOCALES / lang / "LC_MESSAGES" / "messages.po"
        action = "update" if po.exists() else "init"
        subprocess.run([sys.executable, "-m", "babel.messages.frontend", action, "-i", str(pot), "-d",
                        str(LOCALES), "-l", lang, "-D", "messages", "--no-wrap"], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()

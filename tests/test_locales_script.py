"""`python scripts/locales.py` on an unchanged tree changes nothing (no POT-Creation-Date churn)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_locales_script_leaves_an_unchanged_tree_as_it_was(tmp_path: Path) -> None:
    for folder in ("luka_bot", "plugins", "locales", "scripts"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.mo"))
    catalogs = sorted((tmp_path / "locales").rglob("*.po*"))
    before = {path: path.read_bytes() for path in catalogs}
    subprocess.run([sys.executable, "scripts/locales.py"], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    assert {path: path.read_bytes() for path in catalogs} == before

    # A new msgid still lands in the template and in every language (only then the date moves).
    handler = tmp_path / "luka_bot" / "handlers" / "start.py"
    handler.write_text(handler.read_text() + '\n\ndef _new() -> str:\n    return _("A brand new text")\n')
    subprocess.run([sys.executable, "scripts/locales.py"], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    for path in catalogs:
        assert 'msgid "A brand new text"' in path.read_text(), path

"""The README's Python snippet runs as written on a default setup (no .env, no Redis, no LLM)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from luka_bot.core.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippet_runs_as_written(tmp_path: Path) -> None:
    section = README.read_text().split("## Using it from Python", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert snippet is not None
    (tmp_path / "example.py").write_text(snippet.group(1))
    env = {k: v for k, v in os.environ.items() if k.upper() not in Settings.model_fields}
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['ollama', 'openai'] None memory", result.stdout
    assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr, result.stderr

"""The docs an operator reads keep up with the code: every setting documented, every link alive."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from luka_bot.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("document", ["docs/configuration.md", ".env.example"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [name for name in Settings.model_fields if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"{document} does not mention: {', '.join(missing)}"


def test_the_docs_linked_from_the_readme_and_from_each_other_exist() -> None:
    for source in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(((?:docs/)?[\w.-]+\.md)(?:#[\w-]+)?\)", source.read_text()):
            path = (source.parent / target) if source.parent.name == "docs" else ROOT / target
            assert path.exists(), f"{source.name} links to {target}, which does not exist"

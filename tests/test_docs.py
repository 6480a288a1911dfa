"""The docs an operator reads keep up with the code: every setting documented with its real
default, every log line and metric they show exists in the code, every link alive."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from luka_bot.core.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
WILD = "\0"
"""A placeholder: a `%s` / `{…}` in the code, a `…` in the docs."""


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


# --- the settings tables ---------------------------------------------------------------------------------


def table_rows(document: str, first_header: str) -> list[list[str]]:
    """The rows (cells stripped) of every Markdown table whose first column is headed `first_header`."""
    rows, inside = [], False
    for line in (ROOT / document).read_text().splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells[0] == first_header:
            inside = True
        elif inside and not set(cells[0]) <= set("-: "):
            rows.append(cells)
    return rows


SETTING_ROWS = table_rows("docs/configuration.md", "setting")


def test_the_settings_tables_name_only_real_settings_each_once() -> None:
    names = [row[0].strip("`") for row in SETTING_ROWS]
    assert sorted(names) == sorted(Settings.model_fields), "configuration.md's tables vs Settings"


@pytest.mark.parametrize("row", SETTING_ROWS, ids=[row[0].strip("`") for row in SETTING_ROWS])
def test_the_documented_default_is_the_real_one(row: list[str]) -> None:
    name, documented = row[0].strip("`"), row[1]
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    if documented.startswith(("unset", "— (required)")):
        assert default is None, f"{name}: documented {documented!r}, the code's default is {default!r}"
    elif documented == "empty":
        assert default in ([], {}), f"{name}: documented as empty, the code's default is {default!r}"
    else:
        literal = re.match(r"`([^`]*)`", documented)
        assert literal, f"{name}: the default column {documented!r} is neither a `value`, unset nor empty"
        value = literal.group(1)
        if "<" in value:  # worked out at run time, e.g. `llm:<bot id>:`
            assert default is None, name
        elif isinstance(default, dict | list):
            assert json.loads(value) == default, name
        elif isinstance(default, int | float):
            assert float(value) == default, name
        else:
            assert value == default, name


def test_the_documented_error_line_is_what_the_program_prints(tmp_path: Path) -> None:
    example = next(line.strip() for line in (ROOT / "docs/configuration.md").read_text().splitlines()
                   if line.startswith("    luka-bot: ") or line.startswith("    luka_bot: "))
    env = {k: v for k, v in os.environ.items() if k.upper() not in Settings.model_fields}
    result = subprocess.run([sys.executable, "-m", "luka_bot"], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, "BOT_TOKEN": "123456:DOCS-token-not-real", "WEBHOOK_PORT": "65536"},
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == example


# --- log lines -----------------------------------------------------------------------------------------


def _code_pattern(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value.replace("%%", "\1")
        return re.sub(r"%(\([^)]*\))?[-#0 +]*\d*(\.\d+)?[sdrfi]", WILD, text).replace("\1", "%")
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else WILD for part in node.values)
    return None


@cache
def code_patterns() -> tuple[str, ...]:
    """Every string literal of the product code, placeholders as wildcards."""
    patterns = set()
    for path in [*(ROOT / "luka_bot").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            pattern = _code_pattern(node)
            if pattern and len(pattern.strip(WILD + " ")) >= 3:
                patterns.add(pattern)
    return tuple(patterns)


def could_be_the_same(first: str, second: str) -> bool:
    """Whether some text fits both patterns (each may hold wildcards that stand for any text)."""
    @cache
    def fits(i: int, j: int) -> bool:
        if i == len(first) and j == len(second):
            return True
        if i < len(first) and first[i] == WILD and (fits(i + 1, j) or (j < len(second) and fits(i, j + 1))):
            return True
        if j < len(second) and second[j] == WILD and (fits(i, j + 1) or (i < len(first) and fits(i + 1, j))):
            return True
        return i < len(first) and j < len(second) and first[i] == second[j] != WILD and fits(i + 1, j + 1)

    return fits(0, 0)


def documented_log_lines() -> list[tuple[str, str]]:
    """The log lines shown in the docs' log sections: (document, line), annotations and level prefixes cut."""
    sections = {"README.md": "## Log markers", "docs/operations.md": "## Logs",
                "docs/configuration.md": "### Models: current, retired, deprecated",
                "docs/troubleshooting.md": "## The bot does not start"}
    lines = []
    for document, heading in sections.items():
        text = (ROOT / document).read_text()
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        for block in re.findall(r"```\n(.*?)```", section, flags=re.S):
            for line in block.splitlines():
                line = re.sub(r"^(DEBUG|INFO|WARNING|ERROR) [\w.]+: ", "", line)
                line = re.split(r"\s{2,}\(", line)[0].strip()  # "…   (DEBUG, per request)"
                if line:
                    lines.append((document, line))
    return lines


LOG_LINES = documented_log_lines()


def test_the_log_sections_show_lines() -> None:
    assert len(LOG_LINES) >= 20
    assert ("docs/operations.md", "⚠️ No fallback can answer: if ollama fails, users get an apology") in LOG_LINES


@pytest.mark.parametrize(("document", "line"), LOG_LINES, ids=[line[:40] for _, line in LOG_LINES])
def test_a_documented_log_line_is_logged_by_the_code(document: str, line: str) -> None:
    documented = line.replace("…", WILD)
    # A log line starts with its marker (an emoji): only literals that start with it can be the line.
    candidates = [pattern for pattern in code_patterns() if pattern[:2] == documented[:2]]
    assert any(could_be_the_same(documented, pattern) for pattern in candidates), (
        f"{document} shows a log line no code writes: {line}")


def test_the_log_line_check_can_fail() -> None:
    assert could_be_the_same("🔧 Provider order: ollama → openai", "🔧 Provider order: " + WILD)
    assert not could_be_the_same("🔧 Primary: ollama, Fallback: openai", "🔧 Provider order: " + WILD)
    assert could_be_the_same("❌ All LLM providers failed! " + WILD, "❌ All LLM providers failed! " + WILD + "x")


# --- metrics -------------------------------------------------------------------------------------------


async def test_the_metrics_table_is_what_the_bot_exports() -> None:
    from aiogram import Dispatcher
    from prometheus_client import CollectorRegistry

    from luka_bot.core.metrics import InboxMetrics, SendMetrics, UpdateMetricsMiddleware, throttled_counter
    from luka_bot.services.llm_provider_fallback import create_llm_provider_fallback
    from plugins.llm_fallback import MemoryStateStore
    from plugins.llm_fallback.metrics import FallbackMetrics

    registry = CollectorRegistry()
    fallback = create_llm_provider_fallback(load_settings(_env_file=None), MemoryStateStore())
    try:
        FallbackMetrics(fallback, registry)
    finally:
        await fallback.aclose()
    Dispatcher().update.outer_middleware(UpdateMetricsMiddleware(registry))
    InboxMetrics(registry)
    SendMetrics(registry)
    throttled_counter(registry)
    exported = {(f.name + "_total" if f.type == "counter" else f.name, f.type) for f in registry.collect()}
    documented = {(row[0].strip("`"), row[1]) for row in table_rows("docs/operations.md", "metric")}
    assert documented == exported

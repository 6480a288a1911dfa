"""constraints.txt (the pinned versions the suite passed with) agrees with pyproject.toml's ranges.

A fresh clone installs with `pip install -c constraints.txt` (README, .ci/run), so a release of any
dependency can no longer turn a newcomer's first command red; these tests make sure the lock is
refreshed (`bash scripts/lock.sh`) whenever pyproject.toml's dependencies change.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return [Requirement(text) for text in requirements]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if match := PIN.match(line.strip()):
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pins = _pins()
    problems = []
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not in constraints.txt")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement}: constraints.txt pins {pins[name]}, outside the range")
    assert not problems, "run `bash scripts/lock.sh --keep`: " + "; ".join(problems)


def test_the_lock_says_how_to_refresh_it_and_pins_only_exact_versions() -> None:
    text = (ROOT / "constraints.txt").read_text()
    assert "bash scripts/lock.sh" in text.splitlines()[1]
    requirement_lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert requirement_lines and all(PIN.match(line) for line in requirement_lines), "only name==version lines"
    assert "luka-bot" not in _pins(), "the project itself is never pinned (it is installed editable)"


def test_the_install_commands_use_the_lock() -> None:
    readme = (ROOT / "README.md").read_text().split("---", 1)[0]
    commands = [line.strip() for line in readme.splitlines() if "pip install" in line]
    assert len(commands) == 2 and all("-c constraints.txt" in command for command in commands), commands
    assert commands[1] in (ROOT / ".ci" / "run").read_text(), ".ci/run runs exactly the README's test command"


@pytest.mark.parametrize("requirement", [r for r in _declared() if r.marker is None], ids=str)
def test_this_environment_has_the_pinned_version(requirement: Requirement) -> None:
    """The suite runs on exactly the locked versions of what it has installed (a stray upgrade shows here)."""
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{requirement.name} is not installed here (an extra this run does not use)")
    assert installed == _pins()[canonicalize_name(requirement.name)]


def test_the_operators_table_of_tested_versions_matches_the_lock() -> None:
    section = (ROOT / "docs" / "operations.md").read_text().split("## Dependencies: the versions tested", 1)[1]
    pins = _pins()
    rows = re.findall(r"^\| ([a-z0-9\-/ ()`]+?) \| ([0-9.\s/]+) \|$", section, re.MULTILINE)
    assert rows
    for names, versions in rows:
        for name, version in zip(names.split("/"), versions.split("/"), strict=True):
            name = re.sub(r"\(.*?\)", "", name).strip()
            assert pins[canonicalize_name(name)] == version.strip(), name

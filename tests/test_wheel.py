"""`pip install .` (not editable) works: built wheel, fresh venv, run from another directory.

Offline and fast: the wheel is built with this venv's setuptools (--no-build-isolation), the
fresh venv gets it with --no-deps and reaches the dependencies through a `.pth` line naming
this venv's site-packages (appended after its own, so the wheel's code is what runs).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import sysconfig
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from luka_bot.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Installed:
    wheel: Path
    python: Path
    script: Path
    site_packages: Path

    def run(self, *args: str, cwd: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if k.upper() not in Settings.model_fields and k != "PYTHONPATH"}
        return subprocess.run(args, cwd=cwd, input=stdin, env={**clean, "PYTHONDONTWRITEBYTECODE": "1", **env},
                              capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(base / "dist"), str(ROOT)], check=True, capture_output=True, timeout=120)
    (wheel,) = (base / "dist").glob("luka_bot-*.whl")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site_packages = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    (site_packages / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=120)
    return Installed(wheel, python, env_dir / "bin" / "luka-bot", site_packages)


def test_the_wheel_ships_compiled_catalogs_and_no_top_level_plugins_package(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert {"luka_bot/locales/en/LC_MESSAGES/messages.mo", "luka_bot/locales/ru/LC_MESSAGES/messages.mo"} <= names
    assert "plugins/llm_fallback/engine.py" in names
    assert "plugins/__init__.py" not in names, "the wheel must not own the generic `plugins` package"
    assert not any(name.startswith(("locales/", "tests/")) for name in names)


def test_installed_command_reports_its_version_and_a_missing_token_from_elsewhere(installed: Installed,
                                                                                 tmp_path: Path) -> None:
    version = installed.run(str(installed.script), "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == "luka-bot 0.1.0", version.stderr
    started = installed.run(str(installed.script), cwd=tmp_path)
    assert started.returncode == 2, started.stderr
    assert started.stderr.strip().splitlines() == [
        "luka-bot: BOT_TOKEN is not set: put it in the environment or in .env"]


def test_installed_bot_speaks_russian_from_a_read_only_install(installed: Installed, tmp_path: Path) -> None:
    package = installed.site_packages / "luka_bot"
    before = sorted(p.relative_to(package) for p in package.rglob("*"))
    modes = {p: p.stat().st_mode for p in [package, *package.rglob("*")] if p.is_dir()}
    for directory in modes:
        directory.chmod(modes[directory] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        # No LLM needed for /start: the reply is the translated greeting, through the real handlers.
        result = installed.run(str(installed.script), "console", "--lang", "ru", cwd=tmp_path, stdin="/start\n",
                               AVAILABLE_PROVIDERS='{"ollama": ["m1"]}', OLLAMA_URL="http://127.0.0.1:9")
    finally:
        for directory, mode in modes.items():
            directory.chmod(mode)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("luka: 👋 Привет! Я Лука."), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.relative_to(package) for p in package.rglob("*")) == before, "nothing written at run time"
    where = installed.run(str(installed.python), "-c", "import luka_bot, plugins.llm_fallback as p; "
                          "print(luka_bot.__file__); print(p.__file__)", cwd=tmp_path)
    assert all(line.startswith(str(installed.site_packages)) for line in where.stdout.split()), where.stdout

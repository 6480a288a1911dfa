"""Helpers shared by the benchmarks: repo path, percentiles, fake LLM servers and redis-server in subprocesses.

Everything runs on 127.0.0.1. The fake providers are `tests/fakes/fake_llm.py` (aiohttp, a
dependency of aiogram); the Redis server is a plain ``redis-server`` subprocess started here, so
the benchmarks need only ``pip install -e '.[bench]'`` (no pytest).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.processes import terminate  # noqa: E402 - importable once ROOT is on the path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no download at import


def exit_on_sigterm() -> None:
    """SIGTERM runs the `finally` blocks (fakes, redis-server and client processes are stopped)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


class FakeLLMProcess:
    """`python -m tests.fakes.fake_llm` in its own process (so it does not share our GIL/CPU loop)."""

    def __init__(self, name: str, *, latency: float = 0.0):
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.fake_llm", "--port", "0", "--name", name,
             "--latency", str(latency)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("FAKE_LLM_READY "):
            self.stop()
            raise RuntimeError(f"fake LLM {name!r} did not start: {line!r}")
        self.url = line.split(" ", 1)[1]
        self.v1_url = self.url + "/v1"

    def control(self, **settings: Any) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + "/__control", data=json.dumps(settings).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def state(self) -> dict[str, Any]:
        """The fake's settings and every request it received (``GET /__control``)."""
        with urllib.request.urlopen(self.url + "/__control", timeout=30) as response:
            return dict(json.loads(response.read()))

    def count(self) -> int:
        return int(self.state()["count"])

    def stop(self) -> None:
        terminate(self.process)


class RedisProcess:
    """A throw-away ``redis-server`` on a free 127.0.0.1 port, without persistence."""

    def __init__(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> RedisProcess:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self._dir.name, "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        terminate(self.process)
        self._dir.cleanup()

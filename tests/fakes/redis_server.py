"""A real ``redis-server`` on a free loopback port (no pytest needed: benchmarks use it too).

The pytest fixtures ``redis_server`` / ``redis_url`` live in ``tests/fakes/redis_fixtures.py``
(the top-level conftest loads them); importing them from here still works.

Failure simulation: ``kill()`` (SIGKILL, a crash), ``pause()``/``resume()``
(SIGSTOP/SIGCONT, a hung server), ``restart()`` (same port, empty data).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

from tests.fakes.processes import terminate

HOST: Final = "127.0.0.1"
STARTUP_TIMEOUT: Final = 5.0


def redis_server_available() -> bool:
    """Whether a ``redis-server`` binary is on PATH."""
    return shutil.which("redis-server") is not None


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one command in RESP and return the raw first reply line (e.g. ``b"+PONG"``)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload.encode())
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


class RedisServer:
    """A ``redis-server`` subprocess without persistence, bound to 127.0.0.1."""

    def __init__(self, port: int = 0, *, executable: str = "redis-server", extra_args: tuple[str, ...] = ()) -> None:
        self.port = port
        self.executable = executable
        self.extra_args = extra_args
        """More command-line options, e.g. ``("--replicaof", "127.0.0.1", "6379")``."""
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RedisServer:
        """Spawn the server (on a free port unless one was given) and wait for PING."""
        if self.running:
            raise RuntimeError(f"redis-server already running on port {self.port}")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        attempts = 3 if self.port == 0 else 1
        for attempt in range(attempts):
            port = self.port or free_port()
            try:
                self._spawn(port)
                return self
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
        return self

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM, SIGKILL after 5 s) and removal of the temp dir."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL right away: simulates a crash. The port is closed immediately."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.paused = False

    def restart(self) -> None:
        """Stop (if still running) and start again on the same port, with empty data."""
        self._terminate()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether the server answers PING right now."""
        try:
            return redis_command(self.port, "PING", timeout=timeout) == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        reply = redis_command(self.port, "FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _spawn(self, port: int) -> None:
        assert self._dir is not None
        log_path = self._dir / "redis.log"  # stdout and stderr of the server
        args = [
            self.executable,
            "--port", str(port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.port = port
        self._wait_ready(log_path)

    def _wait_ready(self, log_path: Path) -> None:
        """Wait until PING answers; raise with the log tail if the process dies or times out."""
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early on port {self.port}: {self._log_tail(log_path)}")
            if self.ping(timeout=0.2):
                return
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING within {STARTUP_TIMEOUT}s: {self._log_tail(log_path)}")

    @staticmethod
    def _log_tail(log_path: Path) -> str:
        return log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""

    def _terminate(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None and self.paused:
            self.resume()
        terminate(process)
        self.paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            raise RuntimeError("redis-server is not running")
        assert self.process is not None
        os.kill(self.process.pid, sig)


def __getattr__(name: str) -> object:
    """The pytest fixtures, for test modules that import them from here (loaded only then)."""
    if name in ("redis_server", "redis_url"):
        from tests.fakes import redis_fixtures

        return getattr(redis_fixtures, name)
    raise AttributeError(name)

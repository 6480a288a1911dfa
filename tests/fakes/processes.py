"""Stopping a helper process (a fake server, redis-server): politely, then for sure. No pytest."""

from __future__ import annotations

import subprocess


def terminate(process: subprocess.Popen | None, *, grace: float = 5.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; a process already gone is left alone."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

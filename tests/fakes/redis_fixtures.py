"""pytest fixtures over ``tests/fakes/redis_server.py``.

``redis_server`` is session-scoped (skipped only when ``redis-server`` is not installed);
``redis_url`` is function-scoped: it FLUSHALLs the session server and brings it back first if
an earlier test killed, stopped or paused it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.redis_server import RedisServer, redis_server_available


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole session."""
    if not redis_server_available():
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session server, healthy and empty (FLUSHALL) for this test."""
    if redis_server.paused:
        redis_server.resume()
    if not redis_server.running:
        redis_server.restart()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own: killing or pausing it affects no other test."""
    if not redis_server_available():
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server

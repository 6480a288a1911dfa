"""A Redis Sentinel setup on loopback: one master, one replica, three sentinels (no pytest needed).

    with SentinelCluster() as cluster:        # waits until the sentinels see the replica and each other
        cluster.sentinels                     # [("127.0.0.1", port), ...]
        cluster.master.kill()                 # the sentinels promote the replica within a few seconds
        cluster.wait_for_new_master()         # -> (host, port) of the promoted master

Sentinels run ``redis-server <conf> --sentinel`` with a generated config in a temp dir
(down-after 500 ms, failover-timeout 2 s), so a Sentinel failover completes in ~2–4 s.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from redis import Redis

from tests.fakes.processes import terminate
from tests.fakes.redis_server import HOST, RedisServer, free_port

MASTER_NAME = "luka-master"


class SentinelCluster:
    def __init__(self, *, down_after_ms: int = 500, failover_timeout_ms: int = 2000, sentinels: int = 3):
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.master = RedisServer()
        self.replica: RedisServer | None = None
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self._processes: list[subprocess.Popen[bytes]] = []
        self._dir = Path(tempfile.mkdtemp(prefix="redis-sentinel-"))

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.sentinel_ports]

    @property
    def sentinels_setting(self) -> str:
        """The ``REDIS_SENTINELS`` value for this cluster."""
        return ",".join(f"{host}:{port}" for host, port in self.sentinels)

    def start(self) -> Self:
        self.master.start()
        self.replica = RedisServer(extra_args=("--replicaof", HOST, str(self.master.port))).start()
        for port in self.sentinel_ports:
            self._start_sentinel(port)
        self._wait(self._ready, 15, "the sentinels did not see the replica and each other")
        return self

    def _start_sentinel(self, port: int) -> None:
        conf = self._dir / f"sentinel-{port}.conf"
        conf.write_text("\n".join([
            f"port {port}", f"bind {HOST}", f"dir {self._dir}",
            f"sentinel monitor {MASTER_NAME} {HOST} {self.master.port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER_NAME} 1", "",
        ]))  # fmt: skip
        log = (self._dir / f"sentinel-{port}.log").open("ab")
        self._processes.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT))

    def _ready(self) -> bool:
        others = len(self.sentinel_ports) - 1
        for port in self.sentinel_ports:
            with Redis(host=HOST, port=port, socket_timeout=0.5, decode_responses=True) as sentinel:
                if (len(sentinel.sentinel_slaves(MASTER_NAME)) < 1
                        or len(sentinel.sentinel_sentinels(MASTER_NAME)) < others):
                    return False
        assert self.replica is not None
        with Redis(host=HOST, port=self.replica.port, socket_timeout=0.5, decode_responses=True) as replica:
            return replica.info("replication").get("master_link_status") == "up"

    def master_address(self) -> tuple[str, int]:
        """The master as the first sentinel that answers sees it."""
        for port in self.sentinel_ports:
            try:
                with Redis(host=HOST, port=port, socket_timeout=0.5, decode_responses=True) as sentinel:
                    host, master_port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
                    return host, int(master_port)
            except OSError:
                continue
        raise RuntimeError("no sentinel answers")

    def wait_for_new_master(self, timeout: float = 20) -> tuple[str, int]:
        """Wait until the sentinels name a master other than the first one (the replica, promoted)."""
        old = (HOST, self.master.port)
        self._wait(lambda: self.master_address() != old, timeout, "no Sentinel failover happened")
        return self.master_address()

    @staticmethod
    def _wait(predicate, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(message)

    def stop(self) -> None:
        for process in self._processes:
            terminate(process)
        self._processes.clear()
        if self.replica is not None:
            self.replica.stop()
        self.master.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

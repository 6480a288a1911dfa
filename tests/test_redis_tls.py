"""`rediss://` (TLS) as redis-py supports it: a real redis-server with a TLS port and a throw-away CA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from luka_bot.core.config import load_settings
from luka_bot.services.state_stores import build_stores
from tests.fakes.redis_server import HOST, RedisServer, free_port, redis_server_available

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(not redis_server_available() or not shutil.which("openssl"),
                                 reason="needs redis-server and openssl")]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}",
                    "-addext", f"subjectAltName=IP:{HOST}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def test_a_rediss_url_reaches_redis_over_tls(tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    tls_port = free_port()
    server = RedisServer(extra_args=("--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                                     "--tls-key-file", str(key), "--tls-auth-clients", "no"))
    with server:
        settings = load_settings(_env_file=None, BOT_TOKEN="9:tls",
                                 REDIS_URL=f"rediss://{HOST}:{tls_port}/0?ssl_ca_certs={cert}")
        stores = build_stores(settings)
        try:
            assert await stores.fallback.set("preferred", "ollama", 60) is True
            assert await stores.fallback.get_many(["preferred"]) == ["ollama"]
            assert stores.kind == "redis"
        finally:
            await stores.close()
        plain = build_stores(load_settings(_env_file=None, BOT_TOKEN="9:tls", REDIS_URL=f"redis://{HOST}:{tls_port}/0"))
        try:  # the same port without TLS does not answer: served locally, not an error for the caller
            assert await plain.fallback.get_many(["preferred"]) == [None]
            assert plain.kind == "degraded"
        finally:
            await plain.close()

"""Logging with secrets redacted from every record, whoever logs it (aiogram, httpx2, us)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from plugins.llm_fallback.redaction import redact


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message or record.exc_info:
            if record.exc_info:
                cleaned += "\n" + redact(logging.Formatter().formatException(record.exc_info), self.secrets)
                record.exc_info = None
                record.exc_text = None
            record.msg, record.args = cleaned, None
        return True


def setup_logging(level: str, secrets: Iterable[str]) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx2", "httpcore", "openai", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

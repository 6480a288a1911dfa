"""`/metrics` for Prometheus when `METRICS_PORT` is set (optional extra: `pip install 'luka-bot[metrics]'`).

Without `METRICS_PORT` nothing here is imported and the bot runs as before. With it, the
engine's metrics (`plugins.llm_fallback.metrics`), the bot's update metrics
(`bot_updates_total{type}`, `bot_update_seconds`, `bot_updates_in_flight`, from an outer
middleware on `dp.update`), the per-user limits' (`bot_throttled_total{reason}`), the durable inbox's
(`bot_inbox_pending`, `bot_inbox_oldest_seconds`, `bot_inbox_claimed_total`) and the send pacer's (`telegram_requests_total{method,outcome}`,
`telegram_flood_waits_total{scope}`, `telegram_send_wait_seconds`, `telegram_sends_waiting`)
are served on `METRICS_HOST:METRICS_PORT/metrics`. In webhook mode
with `METRICS_PORT == WEBHOOK_PORT` the webhook's own web server serves `/metrics`
(`attach_metrics_route`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Dispatcher
from aiogram.types import TelegramObject, Update
from aiohttp import web

from luka_bot.core.config import Settings
from luka_bot.core.send_pacer import PacedSends
from plugins.llm_fallback import LLMProviderFallback

logger = logging.getLogger("luka_bot")

UPDATE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SEND_WAIT_BUCKETS = (0.0, 0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class UpdateMetricsMiddleware(BaseMiddleware):
    """Counts and times every update the dispatcher handles (outer middleware on `dp.update`)."""

    def __init__(self, registry: Any):
        from prometheus_client import Counter, Gauge, Histogram

        self.updates = Counter("bot_updates", "Telegram updates handled, by type", ["type"], registry=registry)
        self.seconds = Histogram("bot_update_seconds", "Time to handle one update", buckets=UPDATE_BUCKETS,
                                 registry=registry)
        self.in_flight = Gauge("bot_updates_in_flight", "Updates being handled now", registry=registry)

    async def __call__(self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
                       event: TelegramObject, data: dict[str, Any]) -> Any:
        kind = event.event_type if isinstance(event, Update) else type(event).__name__
        self.updates.labels(kind).inc()
        started = time.perf_counter()
        self.in_flight.inc()
        try:
            return await handler(event, data)
        finally:
            self.in_flight.dec()
            self.seconds.observe(time.perf_counter() - started)


class InboxMetrics:
    """The durable inbox, read at scrape time: messages waiting (all processes), the oldest's age, claims here."""

    def __init__(self, registry: Any):
        from prometheus_client import Counter, Gauge

        self.pending = Gauge("bot_inbox_pending", "Messages recorded and not answered yet (every process)",
                             registry=registry)
        self.oldest = Gauge("bot_inbox_oldest_seconds", "Age of the oldest message waiting for its answer",
                            registry=registry)
        self.claimed = Counter("bot_inbox_claimed", "Messages this process took over from a process that stopped",
                               registry=registry)
        self._claimed_seen = 0

    async def refresh(self, inbox: Any) -> None:
        if inbox is None:
            return
        stats = await inbox.stats()
        self.pending.set(stats.pending)
        self.oldest.set(stats.oldest_seconds or 0)
        self.claimed.inc(stats.claimed_total - self._claimed_seen)
        self._claimed_seen = stats.claimed_total


class SendMetrics:
    """The send pacer's metrics (`luka_bot.core.send_pacer`): Bot API calls, 429s, waiting sends."""

    def __init__(self, registry: Any):
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter("telegram_requests", "Bot API calls by method and outcome "
                                "(ok, flood = 429, error, skipped = a frame or typing not sent, undelivered)",
                                ["method", "outcome"], registry=registry)
        self.floods = Counter("telegram_flood_waits", "429s honoured, by what they paused (chat, bot)", ["scope"],
                              registry=registry)
        self.wait = Histogram("telegram_send_wait_seconds", "Time a delivered send waited for its turn (pacing, "
                              "429 pauses)", buckets=SEND_WAIT_BUCKETS, registry=registry)
        self.queue = Gauge("telegram_sends_waiting", "Sends waiting for their turn now", registry=registry)

    def request(self, method: str, outcome: str) -> None:
        self.requests.labels(method, outcome).inc()

    def flood(self, scope: str) -> None:
        self.floods.labels(scope).inc()

    def waited(self, seconds: float) -> None:
        self.wait.observe(seconds)

    def waiting(self, change: int) -> None:
        self.queue.inc(change)


def throttled_counter(registry: Any) -> Callable[[str], None]:
    """`bot_throttled_total{reason}`: messages that cost no LLM call, their user being over a limit."""
    from prometheus_client import Counter

    counter = Counter("bot_throttled", "Messages that cost no LLM call because their user was over a per-user "
                      "limit (rate, quota)", ["reason"], registry=registry)
    for reason in ("rate", "quota"):
        counter.labels(reason)  # both series exist (at 0) before the first refusal
    return lambda reason: counter.labels(reason).inc()


class BotMetrics:
    """One app's registry: the engine's metrics, the update middleware, the `/metrics` handler."""

    def __init__(self, fallback: LLMProviderFallback, dp: Dispatcher, *, on_webhook_server: bool = False,
                 paced: PacedSends | None = None):
        from prometheus_client import CollectorRegistry

        from plugins.llm_fallback.metrics import FallbackMetrics

        self.on_webhook_server = on_webhook_server
        """Served by the webhook's web server (same port) rather than by a server of its own."""
        self.registry = CollectorRegistry()
        self.fallback_metrics = FallbackMetrics(fallback, self.registry)
        self.updates = UpdateMetricsMiddleware(self.registry)
        dp.update.outer_middleware(self.updates)
        self.dp = dp
        self.inbox = InboxMetrics(self.registry)
        if paced is not None:
            paced.metrics = SendMetrics(self.registry)

    async def render(self) -> tuple[bytes, str]:
        """The exposition text, with the provider state read just now."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        try:
            await self.fallback_metrics.refresh()
        except Exception as error:  # noqa: BLE001 - a store hiccup must not break the scrape
            logger.warning("metrics: provider state not refreshed (%s)", type(error).__name__)
        try:
            await self.inbox.refresh(self.dp.get("inbox"))
        except Exception as error:  # noqa: BLE001 - same for the inbox
            logger.warning("metrics: inbox not refreshed (%s)", type(error).__name__)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def handle(self, request: web.Request) -> web.Response:
        body, content_type = await self.render()
        return web.Response(body=body, headers={"Content-Type": content_type})


def attach_metrics_route(web_app: web.Application, metrics: BotMetrics | None) -> None:
    """Serve `/metrics` from the webhook's aiohttp app when the metrics share its port (else nothing)."""
    if metrics is not None and metrics.on_webhook_server:
        web_app.router.add_get("/metrics", metrics.handle)


def setup_metrics(settings: Settings, fallback: LLMProviderFallback, dp: Dispatcher,
                  paced: PacedSends | None = None) -> BotMetrics | None:
    """Create the metrics and, unless the webhook server shares its port, a server started with the bot."""
    if settings.METRICS_PORT is None:  # (settings refuse METRICS_PORT without prometheus-client)
        return None
    shared = bool(settings.WEBHOOK_URL) and settings.METRICS_PORT == settings.WEBHOOK_PORT
    metrics = BotMetrics(fallback, dp, on_webhook_server=shared, paced=paced)
    if shared:
        return metrics  # the webhook module calls attach_metrics_route()
    runners: list[web.AppRunner] = []

    async def start_server() -> None:
        app = web.Application()
        app.router.add_get("/metrics", metrics.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        try:
            await web.TCPSite(runner, settings.METRICS_HOST, settings.METRICS_PORT).start()
        except OSError as error:
            logger.error("❌ Metrics not served: cannot listen on %s:%s (%s); check METRICS_PORT",
                         settings.METRICS_HOST, settings.METRICS_PORT, error.strerror or error)
            return
        logger.info("📈 Metrics on http://%s:%s/metrics", settings.METRICS_HOST, settings.METRICS_PORT)

    async def stop_server() -> None:
        for runner in runners:
            await runner.cleanup()

    dp.startup.register(start_server)
    dp.shutdown.register(stop_server)
    return metrics

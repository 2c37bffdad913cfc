"""`/metrics` on the worker's port, as Prometheus scrapes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from shared.embedded import free_port
from shared.events import Event
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_bodies
from tests.helpers import LogLines, add_events, eventually
from tests.worker.helpers import running
from worker.consumers import Context, consumer
from worker.dlq import read_all


async def test_metrics_expose_outcomes_latency_deliveries_lag_pending_and_dlq(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    port = free_port()
    settings = make_settings(
        worker_metrics_port=port, host="127.0.0.1", max_deliveries=2, retry_base="20ms"
    )
    gate = asyncio.Event()

    @consumer("measured")
    async def measured(event: Event, ctx: Context) -> None:
        if event.call_id == "c-0":
            raise RuntimeError("always")
        if event.call_id == "c-9":
            await gate.wait()

    keys = Keys(settings.key_prefix)
    stream = keys.events()
    async with running(settings, redis, [measured]):
        await add_events(redis, settings, *sample_bodies(10))
        await eventually(lambda: read_all(redis, keys.dlq))

        async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/metrics") as resp,
            ):
                assert resp.status == 200
                text = await resp.text()
            return {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }

        async def eight_processed() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            found = await scrape()
            key = ("rtt_worker_entries_total", (("consumer", "measured"), ("outcome", "processed")))
            return found if found.get(key) == 8 else {}

        metrics = await eventually(eight_processed)
        gate.set()

    def value(name: str, **labels: str) -> float:
        return metrics[(name, tuple(sorted(labels.items())))]

    assert value("rtt_worker_entries_total", consumer="measured", outcome="failed") == 2
    assert value("rtt_worker_entries_total", consumer="measured", outcome="dead_lettered") == 1
    assert value("rtt_worker_retries_total", consumer="measured") == 1
    assert value("rtt_worker_handler_seconds_count", consumer="measured") == 10
    assert value("rtt_worker_handler_seconds_bucket", consumer="measured", le="+Inf") == 10
    # Eight handled on their first delivery, the dead letter on its second.
    assert value("rtt_worker_deliveries_bucket", consumer="measured", le="1.0") == 8
    assert value("rtt_worker_deliveries_bucket", consumer="measured", le="2.0") == 9
    assert value("rtt_group_pending", stream=stream, group="measured") == 1  # c-9, gated
    assert value("rtt_group_lag", stream=stream, group="measured") == 0
    assert value("rtt_group_oldest_pending_age_seconds", stream=stream, group="measured") >= 0
    assert value("rtt_stream_length", stream=stream) == 10
    assert value("rtt_dlq_depth", group="measured") == 1


async def test_consumers_own_metrics_and_alert_counts_are_served_too(
    make_settings: Callable[..., Settings], redis: Redis, logs: LogLines
) -> None:
    """A plugin's prometheus-client metrics and the built-in alert counter reach /metrics."""
    from prometheus_client import Counter

    from tests.alerts.helpers import alerts_consumer
    from tests.bodies import sample_body

    port = free_port()
    settings = make_settings(worker_metrics_port=port, host="127.0.0.1")
    name = f"plugin_events_{settings.key_prefix}"
    seen = Counter(name, "events seen by a plugin")

    @consumer("counting")
    async def counting(event: Event, ctx: Context) -> None:
        seen.inc()

    body = sample_body("stopped", cause="error")
    sent_key = "rtt_alerts_total[('outcome', 'sent'), ('severity', 'error')]"
    async with running(settings, redis, [counting, alerts_consumer(settings)]):
        await add_events(redis, settings, body)

        async def scraped() -> dict[str, float]:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/metrics") as resp,
                ):
                    text = await resp.text()
            except aiohttp.ClientConnectionError:
                return {}  # the metrics server is still starting
            found = {
                (sample.name + str(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
            # Consumers run independently: the alert may be sent after the plugin counted.
            return (
                found if found.get(f"{name}_total[]") == 1 and found.get(sent_key, 0) >= 1 else {}
            )

        metrics = await eventually(scraped)
    assert metrics[f"{name}_total[]"] == 1
    assert metrics[sent_key] >= 1


async def test_metrics_listen_on_their_own_host_setting(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    port = free_port()
    # RTT_HOST names an address this machine does not have: the receiver's, elsewhere.
    settings = make_settings(
        worker_metrics_port=port, host="192.0.2.1", worker_metrics_host="127.0.0.1"
    )

    @consumer("idle")
    async def idle(event: Event, ctx: Context) -> None:
        pass

    async with running(settings, redis, [idle]):

        async def served() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/metrics") as resp,
                ):
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        assert await eventually(served, 15, "/metrics on RTT_WORKER_METRICS_HOST")

"""A failover under load, counted by id: `rtt send` posts to a receiver process while a
worker process alerts to a webhook; a fault strikes Redis mid-way.

Afterwards every event answered 204 must be on the streams once and every alert it
raises must have reached the webhook once. The run's figures are printed as one line:
sent, 204, stored, lost, duplicated, alerts.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from redis.asyncio import Redis

from rtt.send import SendOptions, planned_bodies
from shared.connections import create_redis
from shared.embedded import free_port
from shared.events import Event, decode_event
from shared.keys import Keys
from shared.settings import load_settings
from tests.alerts.sinkserver import SinkServer
from tests.processes import Program, start_worker
from tests.receiver.helpers import metric, stream_call_ids
from tests.worker.helpers import worker_env
from worker.alerts import AlertOptions, alert_for

__all__ = ["PREFIX", "Load", "Result", "run_failover"]

PREFIX = "fo"


@dataclass(frozen=True)
class Load:
    count: int
    rate: float
    concurrency: int = 16
    seed: int = 9


@dataclass
class Result:
    name: str
    sent: int
    statuses: dict[str, int]
    stored: int
    lost: list[str]
    duplicated: list[str]
    alerts_expected: int
    alerts_sent: int
    alerts_missing: list[str]
    alerts_twice: list[str]
    spooled: float
    consumed: bool
    pending: int
    dead_lettered: int
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"{self.name}: sent {self.sent}, 204 {self.statuses.get('204', 0)} "
            f"(spooled {self.spooled:.0f}), stored {self.stored}, lost {len(self.lost)} "
            f"{self.lost[:10]}, duplicated {len(self.duplicated)} {self.duplicated[:10]}, "
            f"alerts {self.alerts_sent}/{self.alerts_expected} (missing "
            f"{len(self.alerts_missing)} {self.alerts_missing[:5]}, twice "
            f"{len(self.alerts_twice)} {self.alerts_twice[:5]}); consumed {self.consumed}, "
            f"pending {self.pending}, dead-lettered {self.dead_lettered}; statuses {self.statuses}"
        )

    def check_every_204_kept(self, load: Load, replicas: int) -> None:
        """What every failover keeps (printed first, for the figures): a 204 for each
        event, none stored twice, none dead-lettered, every alert sent; with
        RTT_STORE_REPLICAS none lost either (acknowledged only once the replica had it, a
        failover cannot lose it)."""
        print("\n" + self.line())
        assert self.statuses == {"204": load.count}
        if replicas:
            assert self.lost == []
        assert self.duplicated == []
        # Redis away spends no delivery: no entry is dead-lettered for a failover.
        assert self.dead_lettered == 0
        assert self.alerts_missing == []


async def _send(url: str, load: Load, log: Path) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtt",
        "send",
        "--url",
        url,
        "--type",
        "all",
        "--count",
        str(load.count),
        "--rate",
        str(load.rate),
        "--concurrency",
        str(load.concurrency),
        "--seed",
        str(load.seed),
        "--timeout",
        "15",
        "--json",
        "--no-progress",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    await asyncio.to_thread(log.write_bytes, out)
    report: dict[str, Any] = msgspec.json.decode(out.splitlines()[-1])
    return report


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - polling another process's state
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


async def _consumed(redis: Redis, keys: Keys) -> bool:
    """Every stream's `alerts` group has read to the end and acknowledged everything."""
    for stream in keys.event_streams():
        try:
            groups = {g["name"]: g for g in await redis.xinfo_groups(stream)}
        except Exception:
            return False
        info = groups.get(b"alerts")
        if not info or info["pending"] != 0 or info.get("lag") != 0:
            return False
    return True


async def _pending(redis: Redis, keys: Keys) -> int:
    total = 0
    for stream in keys.event_streams():
        for group in await redis.xinfo_groups(stream):
            total += int(group["pending"])
    return total


async def run_failover(
    name: str,
    redis_url: str,
    tmp_path: Path,
    load: Load,
    fault: Callable[[], None],
    *,
    fault_at: float = 0.3,
    settle_s: float = 20.0,
    **settings: str,
) -> Result:
    """Run `load` through a receiver and a worker on `redis_url`; call `fault` (in a thread)
    when `fault_at` of the load is due; count what was answered, stored and alerted."""
    prefix = PREFIX
    webhook = SinkServer()
    await webhook.start()
    port = free_port()
    values = {
        "host": "127.0.0.1",
        "port": str(port),
        "spool_dir": str(tmp_path / "spool"),
        "store_timeout": "1s",
        "alert_webhook_url": webhook.url,
        # One group per transcription: every failure is a first alert, counted by its key.
        "alert_group_by": "transcription_id",
        "alert_rate_min_stops": "100000000",
        "heartbeat_ttl": "10s",
    }
    env = worker_env(redis_url, prefix, **{**values, **settings})
    keys = Keys(prefix, int(env.get("RTT_SHARDS", "1")))
    receiver = Program(["rtt", "receiver"], env, tmp_path / "receiver.log")
    worker = start_worker(env, tmp_path / "worker.log", worker_id="w1", rtt=True)
    base = f"http://127.0.0.1:{port}"
    redis = create_redis(load_settings(env={"RTT_REDIS_URL": redis_url}))
    try:
        await _until(lambda: _healthy(base), 20, "the receiver")
        sending = asyncio.create_task(
            _send(base + "/realTimeTranscriptionEvents", load, tmp_path / "send.log")
        )
        # The fault strikes when the receiver has answered that share of the load (rtt send
        # takes a moment to start on a busy machine).
        await _until(lambda: _answered(base, load.count * fault_at), 30, "the load under way")
        await asyncio.to_thread(fault)
        report = await sending
        await _until(lambda: _drained(base), settle_s, "the spool drained")
        spooled = await metric(base, "rtt_receiver_requests_total", outcome="spooled")
        try:
            await _until(lambda: _consumed(redis, keys), settle_s, "the worker consumed all")
            consumed = True
        except AssertionError:
            consumed = False
        stored = await stream_call_ids(redis, keys)
        pending = await _pending(redis, keys)
        dead_lettered = await redis.xlen(keys.dlq)
        pending_rows = [
            row
            for stream in keys.event_streams()
            for row in await redis.xpending_range(stream, "alerts", "-", "+", 20)
        ]
    finally:
        worker.stop()
        receiver.stop()
        await redis.aclose()
        await webhook.stop()
    options = SendOptions(type="all", count=load.count, seed=load.seed)
    bodies = list(itertools.islice(planned_bodies(options), load.count))
    call_ids = [msgspec.json.decode(body)["callId"] for body in bodies]
    # Failures the alerts consumer sends, keyed as it keys them.
    alert_options = AlertOptions.from_settings(load_settings(env={}))
    expected_alerts = {
        alert.alert_key: call_id
        for body, call_id in zip(bodies, call_ids, strict=True)
        if isinstance(event := decode_event(body), Event)
        and (alert := alert_for(event, alert_options)) is not None
    }
    sent_alerts = Counter(b["alert_key"] for b in webhook.accepted if b.get("kind") == "alert")
    return Result(
        name=name,
        sent=int(report["sent"]),
        statuses=report["statuses"],
        stored=sum(stored.values()),
        lost=[c for c in call_ids if stored[c] == 0],
        duplicated=[c for c in call_ids if stored[c] > 1],
        alerts_expected=len(expected_alerts),
        alerts_sent=sum(sent_alerts.values()),
        # An event lost with a failover cannot raise its alert; every other one must.
        alerts_missing=[k for k, c in expected_alerts.items() if stored[c] and not sent_alerts[k]],
        alerts_twice=[k for k, n in sent_alerts.items() if n > 1],
        spooled=spooled,
        consumed=consumed,
        pending=pending,
        dead_lettered=dead_lettered,
        extra={"pending_rows": pending_rows},
    )


async def _healthy(base: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(base + "/healthz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def _answered(base: str, count: float) -> bool:
    return await metric(base, "rtt_receiver_requests_total") >= count


async def _drained(base: str) -> bool:
    return await metric(base, "rtt_receiver_spool_depth") == 0

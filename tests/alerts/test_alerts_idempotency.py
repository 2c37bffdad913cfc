"""Each notification has its own `Idempotency-Key`; the same notification resent keeps it.

A receiver that folds repeated keys (as README recommends) must keep every distinct
notification: the first alert, each summary, a rate incident's firing and its resolved.
PagerDuty's `dedup_key` is another matter: it names the incident, shared on purpose.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from redis.asyncio import Redis

from shared.settings import Settings
from tests.alerts.helpers import running_workers, settled, sink_settings, wait_handled
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_event
from tests.helpers import add_events, eventually

FAILURES = 20


def _failure(n: int) -> bytes:
    body = sample_event(
        "stopped",
        cause="error",
        call_id=f"c-{n}",
        transcription_id=f"t-{n}",
        destination="wss://asr.example.com/live",
    )
    return msgspec.json.encode(body)


async def test_every_notification_has_its_own_key_that_a_resend_keeps(
    make_settings: Callable[..., Settings],
    redis: Redis,
    sink_servers: dict[str, SinkServer],
    prefix: str,
) -> None:
    webhook, pagerduty = sink_servers["webhook"], sink_servers["pagerduty"]
    # Every notification is refused the first time its key is seen, then resent.
    webhook.refuse_once = True
    settings = make_settings(
        **sink_settings(sink_servers),
        alert_group_interval="200ms",
        alert_repeat_interval="1h",
        alert_rate_min_stops="5",
        alert_rate_window="1s",
        alert_sink_retries="2",
        retry_base="50ms",
    )
    async with running_workers(settings, redis):
        await add_events(redis, settings, _failure(0))
        await eventually(lambda: webhook.accepted, what="first alert")
        for n in range(1, FAILURES):
            await add_events(redis, settings, _failure(n))
        await wait_handled(redis, settings, FAILURES)
        # The failures slide out of the 1 s window: the rate incident resolves.
        await eventually(
            lambda: (
                [b.get("status") for b in webhook.accepted if b["kind"] == "rate"]
                == ["firing", "resolved"]
            ),
            what="rate firing and resolved",
        )
        await eventually(lambda: settled(redis, settings), what="outbox delivered")
    kinds = [b["kind"] for b in webhook.accepted]
    per_key = webhook.accepted_per_key()
    print(
        f"\nnotifications by kind: { {k: kinds.count(k) for k in set(kinds)} }; "
        f"distinct keys {len(per_key)} of {len(webhook.accepted)} delivered"
    )
    assert kinds.count("alert") == 1
    assert kinds.count("summary") >= 1
    assert kinds.count("rate") == 2
    # One key per notification: a folding receiver keeps every one of them.
    assert len(per_key) == len(webhook.accepted), per_key
    alert = next(b for b in webhook.accepted if b["kind"] == "alert")
    summaries = [b for b in webhook.accepted if b["kind"] == "summary"]
    assert 1 + sum(s["count"] for s in summaries) == FAILURES
    keyed = {r.headers["Idempotency-Key"]: r.json() for r in webhook.received if r.status == 200}
    assert keyed[alert["alert_key"]] == alert
    assert {s["summary_key"] for s in summaries} <= set(keyed)
    # The same notification resent (after a 503) carries the key it had the first time.
    refused = [r for r in webhook.received if r.status == 503]
    assert refused
    for r in refused:
        assert keyed[r.headers["Idempotency-Key"]] == r.json()
    # PagerDuty: one incident per group, and a rate incident's trigger and resolve share
    # their dedup_key.
    pages = pagerduty.accepted
    rate_pages = [p for p in pages if p["dedup_key"].startswith(f"{prefix}-failure-rate-")]
    assert [p["event_action"] for p in rate_pages] == ["trigger", "resolve"]
    assert len({p["dedup_key"] for p in rate_pages}) == 1
    assert {p["dedup_key"] for p in pages if p not in rate_pages} == {alert["alert_key"]}

"""The built-in `alerts` consumer: rules, silences, once-only delivery, grouping, rate rule.

The worker hands it a read's worth of events at once (a batch consumer), and each step
below is one pipelined round trip for the whole batch, not one per event: the state every
event records (stale tracking, the rate window), then for the alerts among them the
silences, the log's once-claims, their records, and the groups. Only a group's first
alert goes on alone, to the sinks. An event whose own step fails fails alone.

For each failed Stopped or Rejected event (and each stale transcription, see `stale`):

1. a matching silence mutes it (logged at info and counted, nothing sent);
2. the structured log gets `transcription_alert`, once per alert key;
3. its group decides: the group's first alert goes to every sink now, once per sink; a
   sink that fails makes the handler raise, so the entry is retried by the runtime and
   finally dead-lettered, never dropped. Later alerts of the group wait for the summary.

A background upkeep task closes group windows into summaries, slides the rate rule's
window and, on the worker that holds the lease, raises stale transcriptions and delivers
summaries, rate changes and resolves.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import aiohttp
import msgspec
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from structlog.typing import FilteringBoundLogger

from shared.events import Event, Rejected, Started, Stopped
from shared.keys import Keys
from shared.logs import held_lines
from shared.replicas import NotReplicated
from worker.consumers import Consumer, Context, SetupContext, consumer

from .alertmanager import AlertmanagerSink
from .delivery import MAX_WAIT_S, Poster, SinkError, SinkPaused
from .grouping import Groups, decision_of
from .once import CLAIMED, SENDING, Once
from .options import AlertOptions
from .outbox import Lease, Outbox
from .pipelined import Call, per_item
from .pipelined import run as run_calls
from .quiet import QuietRule
from .rate import RateRule
from .rules import Alert, alert_for, check_group_by
from .silences import (
    Silence,
    active_of,
    count_hit,
    hit_call,
    matching_silence,
    silence_for,
    silences_call,
)
from .sinks import LogSink, Sink, http_sinks
from .stale import StaleRule

__all__ = ["AlertsConsumer", "make_alerts_consumer"]

ALERTS: Final = Counter(
    "rtt_alerts_total",
    "Alerts raised, by severity and what became of them",
    ["severity", "outcome"],
)
_STOP_GRACE_S: Final = 5.0
T = TypeVar("T")
_RECORDED: Final = (Started, Stopped, Rejected)  # what stale tracking records


class SinkFailed(Exception):
    """Some sinks did not take an alert; the entry is retried (and finally dead-lettered)."""


@dataclass(slots=True)
class _Running:
    redis: Redis
    keys: Keys
    options: AlertOptions
    session: aiohttp.ClientSession
    log_sink: LogSink
    sinks: list[Sink]
    once: Once
    groups: Groups
    rate: RateRule
    stale: StaleRule
    quiet: QuietRule
    lease: Lease
    outbox: Outbox
    stopping: asyncio.Event
    log: FilteringBoundLogger
    # Alerts on their way to the sinks at once, over every batch: as many as the
    # consumer's concurrency, as when each event had a call of its own.
    sending: asyncio.Semaphore
    alertmanager: AlertmanagerSink | None = None
    upkeep: asyncio.Task[None] | None = None


class AlertsConsumer:
    """One per worker process: owns the HTTP session and the upkeep task.

    Built with its options by the worker (`AlertOptions.from_settings`: its sinks' URLs and
    keys are its own); like any plugin, it gets only its own resources from the worker's
    contexts.
    """

    def __init__(self, options: AlertOptions) -> None:
        self._options = options
        self._run: _Running | None = None

    async def setup(self, ctx: SetupContext) -> None:
        options = self._options
        check_group_by(options.group_by)
        session = aiohttp.ClientSession()

        def poster(max_wait_s: float | None) -> Poster:
            return Poster(
                session,
                ctx.redis,
                ctx.keys,
                timeout_s=options.sink_timeout.total_seconds(),
                retries=options.sink_retries,
                max_wait_s=max_wait_s,
            )

        log_sink = LogSink()
        # Handlers wait a short pause out; a longer one hands the alert to the outbox,
        # whose sinks wait as long as the sink asks.
        handler_poster = poster(MAX_WAIT_S)
        sinks = http_sinks(options, handler_poster)
        outbox_sinks = http_sinks(options, poster(None))
        # Alertmanager gets every alert from the handler, and rate changes from the outbox.
        alertmanager = None
        if options.alertmanager_url:
            resolve_after = options.alertmanager_resolve_after
            url = options.alertmanager_url
            alertmanager = AlertmanagerSink(handler_poster, url, resolve_after)
            outbox_sinks.append(AlertmanagerSink(poster(None), url, resolve_after))
        # A sender's lock lapses with its heartbeat: when a dead worker's entries are taken
        # over, the copy of what it was sending can go out at once.
        lock_s = options.heartbeat_ttl.total_seconds()
        once = Once(
            ctx.redis,
            ctx.keys,
            ctx.log,
            ttl_s=options.once_ttl.total_seconds(),
            lock_s=lock_s,
            wait_s=handler_poster.budget_s + lock_s,
            replicas=options.replicas,
        )
        tick_s = min(1.0, max(0.05, options.group_interval.total_seconds() / 4))
        # The lease is renewed every tick, so it must outlive a few of them.
        lease_s = max(options.heartbeat_ttl.total_seconds(), 3 * tick_s)
        lease = Lease(
            ctx.redis,
            ctx.keys.alert_leader,
            lease_s,
            holder=ctx.worker_id,
        )
        outbox = Outbox(
            ctx.redis,
            ctx.keys,
            options,
            [log_sink, *outbox_sinks],
            once,
            lease,
            ctx.log,
            tick_s=tick_s,
        )
        stopping = asyncio.Event()
        run = _Running(
            redis=ctx.redis,
            keys=ctx.keys,
            options=options,
            session=session,
            log_sink=log_sink,
            sinks=sinks,
            once=once,
            groups=Groups(ctx.redis, ctx.keys, options),
            rate=RateRule(ctx.redis, ctx.keys, options),
            stale=StaleRule(ctx.redis, ctx.keys, options),
            quiet=QuietRule(ctx.redis, ctx.keys, options),
            lease=lease,
            outbox=outbox,
            stopping=stopping,
            log=ctx.log,
            sending=asyncio.Semaphore(ctx.options.concurrency),
            alertmanager=alertmanager,
        )
        run.upkeep = asyncio.create_task(self._upkeep(run, tick_s), name="alerts-upkeep")
        self._run = run
        names = ["log", *(s.name for s in sinks), *(["alertmanager"] if alertmanager else [])]
        ctx.log.info("alert_sinks", sinks=names)

    async def teardown(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        run.stopping.set()
        try:
            if run.upkeep is not None:
                await asyncio.wait_for(run.upkeep, _STOP_GRACE_S)
        except TimeoutError:
            run.log.warning("alerts_upkeep_cancelled", after_s=_STOP_GRACE_S)
        finally:
            with contextlib.suppress(RedisError):
                await run.lease.release()
            await run.session.close()

    async def handle(
        self, events: Sequence[Event], ctxs: Sequence[Context]
    ) -> list[BaseException | None]:
        """A batch: first the state every event records, in one round trip (most events
        alert not, and cost just that), then the alerts among them, together."""
        run = self._run
        if run is None:
            raise RuntimeError("alerts consumer used before setup")
        outcomes: list[BaseException | None] = [None] * len(events)
        recorded: list[Started | Stopped | Rejected] = []
        owners: list[int] = []
        alerts: list[tuple[int, Alert]] = []
        stops: list[tuple[Stopped, int]] = []
        stopped: list[int] = []
        options = run.options
        for n, (event, ctx) in enumerate(zip(events, ctxs, strict=True)):
            if isinstance(event, _RECORDED):
                recorded.append(event)
                owners.append(n)
            if isinstance(event, Stopped):
                at_ms = ctx.received_at_ms or int(ctx.entry_id.split("-", 1)[0])
                stops.append((event, at_ms))
                stopped.append(n)
            alert = alert_for(event, options)
            if alert is not None:
                alerts.append((n, alert))
        # One call for the batch's stale tracking, one for its stops (counted, then the
        # window evaluated): each fails its own events.
        calls: list[tuple[Call, list[int]]] = []
        record = run.stale.record_call(recorded)
        if record is not None:
            calls.append((record, owners))
        if stops:
            calls.append((run.rate.record_call(stops), stopped))
        if alerts:  # the silences, read in the same round trip, for the alerts to come
            calls.append((silences_call(run.keys), [n for n, _ in alerts]))
        results = await run_calls(run.redis, [call for call, _ in calls])
        for (_, indices), result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                for n in indices:
                    outcomes[n] = result
        alerts = [(n, alert) for n, alert in alerts if outcomes[n] is None]
        if alerts:
            await _raise_batch(run, alerts, ctxs, outcomes, active_of(results[-1]))
        return outcomes

    async def _upkeep(self, run: _Running, tick_s: float) -> None:
        """Close due windows, slide the rate window, hold the lease; deliver while held."""
        resend_s = run.options.alertmanager_resend.total_seconds()
        next_resend = 0.0
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(run.outbox.run(run.stopping))
            while not run.stopping.is_set():
                try:
                    await run.lease.renew()
                    await run.groups.close_due()
                    await run.rate.evaluate()
                    if run.lease.held:
                        await run.quiet.evaluate()
                        await _raise_stale(run)
                    due = loop.time() >= next_resend
                    if run.alertmanager is not None and run.lease.held and due:
                        next_resend = loop.time() + resend_s
                        await _resend_firing_rate(run, run.alertmanager)
                except Exception as exc:
                    run.lease.held = False
                    # Redis being down is expected and retried next tick; anything else is
                    # a bug, shown with its traceback, and retried all the same.
                    log = run.log.warning if isinstance(exc, RedisError) else run.log.exception
                    log("alerts_upkeep_failed", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.stopping.wait(), tick_s)


async def _nothing() -> None:
    return None


async def _raise(run: _Running, alert: Alert, log: FilteringBoundLogger, deliveries: int) -> bool:
    """One alert through silences, the log, Alertmanager, its group and the sinks, once;
    False if a silence muted it."""
    silence = await matching_silence(run.redis, run.keys, alert)
    if silence is not None:
        if await run.once.send("silenced", alert.alert_key, _nothing):
            await count_hit(run.redis, run.keys, silence.id)
            ALERTS.labels(alert.severity, "silenced").inc()
            log.info(
                "transcription_alert_silenced",
                silence_id=silence.id,
                silence_comment=silence.comment,
                **_fields(alert),
            )
        return False

    async def log_alert() -> None:
        await run.log_sink.send(alert, log)

    await run.once.send(run.log_sink.name, alert.alert_key, log_alert)
    if run.alertmanager is not None:
        await _send_to_alertmanager(run, run.alertmanager, alert, log, deliveries)
    if await run.groups.register(alert) == "grouped":
        ALERTS.labels(alert.severity, "grouped").inc()
        return True
    await _send_first(run, alert, log, deliveries)
    return True


class _Claimed(msgspec.Struct):
    """An alert of a batch on its way: which once-record it takes, and how it went."""

    n: int  # its event's index in the batch
    alert: Alert
    silence: Silence | None
    sink: str  # the log sink, or "silenced"
    token: str


async def _raise_batch(
    run: _Running,
    alerts: list[tuple[int, Alert]],
    ctxs: Sequence[Context],
    outcomes: list[BaseException | None],
    silences: list[Silence],
) -> None:
    """The alerts of a batch, as `_raise` takes each, with a round trip per step for all:
    the once-claims (log or silenced, by the `silences` in force), the log lines, the
    records and silence hits, Alertmanager, the groups (with the records when nothing
    comes between); then each group's first alert to the sinks."""

    def fail(items: Sequence[_Claimed | tuple[int, Alert]], exc: BaseException) -> None:
        for item in items:
            outcomes[item.n if isinstance(item, _Claimed) else item[0]] = exc

    try:
        claims = []
        token = uuid.uuid4().hex  # one sender: this call; its claims differ by their keys
        for n, alert in alerts:
            silence = silence_for(silences, alert)
            sink = run.log_sink.name if silence is None else "silenced"
            claims.append(_Claimed(n, alert, silence, sink, token))
        items = [(c.sink, c.alert.alert_key) for c in claims]
        splits = run.once.claim_calls(items, token)
        replies = await run_calls(run.redis, [s.call for s in splits], run.once.replicas)
        states = per_item(splits, replies, len(claims))
    except NotReplicated as exc:
        # Claimed on the master alone: give the claims up, send nothing; retried later.
        with contextlib.suppress(RedisError, OSError):
            await run_calls(run.redis, [s.call for s in run.once.release_calls(items, token)])
        fail(alerts, exc)
        return
    except (RedisError, OSError) as exc:
        fail(alerts, exc)
        return
    # Another worker (or an event of this batch) is sending it: the one-alert path, once
    # this batch's records are written.
    alone: list[tuple[int, Alert]] = []
    taken: list[_Claimed] = []  # claimed now: logged here, recorded next
    going: list[_Claimed] = []  # not silenced: on to Alertmanager and the groups
    with held_lines():  # written at once, before the records say they were
        for claim, state in zip(claims, states, strict=True):
            if isinstance(state, Exception):
                outcomes[claim.n] = state
            elif int(state) == SENDING:
                alone.append((claim.n, claim.alert))
            else:
                if int(state) == CLAIMED:
                    taken.append(claim)
                    await _log_claimed(run, claim, ctxs[claim.n].log)
                if claim.silence is None:
                    going.append(claim)
    # Without Alertmanager (whose sends come between) and without replicas to wait for,
    # the groups take the alerts in the records' round trip.
    together = run.alertmanager is None and run.once.replicas is None and going
    register = [run.groups.register_many_call([c.alert for c in going])] if together else []
    replies = await _record_claimed(run, taken, outcomes, register)
    if run.alertmanager is not None:
        sent = await asyncio.gather(
            *(
                _bounded(
                    run,
                    _send_to_alertmanager(
                        run, run.alertmanager, c.alert, ctxs[c.n].log, ctxs[c.n].deliveries
                    ),
                )
                for c in going
            ),
            return_exceptions=True,
        )
        for claim, result in zip(going, sent, strict=True):
            if isinstance(result, BaseException):
                outcomes[claim.n] = result
        going = [c for c in going if outcomes[c.n] is None]
    if going and not together:
        try:
            replies = await run_calls(
                run.redis, [run.groups.register_many_call([c.alert for c in going])]
            )
        except (RedisError, OSError) as exc:
            replies = [exc]
    decisions = replies[0] if replies and isinstance(replies[0], list) else replies * len(going)
    first: list[tuple[int, Alert]] = []
    grouped: collections.Counter[str] = collections.Counter()  # counted once a batch
    for claim, decision in zip(going, decisions, strict=True):
        if isinstance(decision, Exception):
            outcomes[claim.n] = decision
        elif decision_of(decision) == "grouped":
            grouped[claim.alert.severity] += 1
        else:
            first.append((claim.n, claim.alert))
    for severity, count in grouped.items():
        ALERTS.labels(severity, "grouped").inc(count)
    sends = [
        *(_send_first(run, a, ctxs[n].log, ctxs[n].deliveries) for n, a in first),
        *(_raise(run, a, ctxs[n].log, ctxs[n].deliveries) for n, a in alone),
    ]
    done = await asyncio.gather(*(_bounded(run, s) for s in sends), return_exceptions=True)
    for (n, _), outcome in zip([*first, *alone], done, strict=True):
        if isinstance(outcome, BaseException):
            outcomes[n] = outcome


async def _bounded(run: _Running, send: Coroutine[None, None, T]) -> T:
    async with run.sending:
        return await send


async def _log_claimed(run: _Running, claim: _Claimed, log: FilteringBoundLogger) -> None:
    alert = claim.alert
    if claim.silence is None:
        await run.log_sink.send(alert, log)
        return
    ALERTS.labels(alert.severity, "silenced").inc()
    log.info(
        "transcription_alert_silenced",
        silence_id=claim.silence.id,
        silence_comment=claim.silence.comment,
        **_fields(alert),
    )


async def _record_claimed(
    run: _Running, taken: list[_Claimed], outcomes: list[BaseException | None], more: list[Call]
) -> list[Any]:
    """The once-records of what was just logged, and the silences' hits, in one round trip
    (with `more`, whose results it returns); a record that does not land is written alone
    until Redis takes it, as `Once.send` does."""
    splits = run.once.record_calls([(c.sink, c.alert.alert_key) for c in taken])
    calls = [split.call for split in splits]
    silenced = [c for c in taken if c.silence is not None]
    calls += [hit_call(run.keys, c.silence.id) for c in silenced if c.silence is not None]
    calls += more
    try:
        results = await run_calls(run.redis, calls, run.once.replicas)
    except (RedisError, OSError) as exc:
        results = [exc] * len(calls)
    recorded = per_item(splits, results[: len(splits)], len(taken))
    unrecorded = [
        c for c, result in zip(taken, recorded, strict=True) if isinstance(result, Exception)
    ]
    hits = results[len(splits) : len(calls) - len(more)]
    for claim, result in zip(silenced, hits, strict=True):
        if isinstance(result, Exception):
            outcomes[claim.n] = result  # the hit is not counted; the entry is retried
    await asyncio.gather(*(run.once.record(c.sink, c.alert.alert_key, c.token) for c in unrecorded))
    return results[len(calls) - len(more) :]


async def _raise_stale(run: _Running) -> None:
    """On the lease holder: raise each stale alert that is due; one that a sink did not
    take stays due and is tried again next tick."""
    for alert in await run.stale.due():
        if run.stopping.is_set() or not run.lease.held:
            return
        try:
            sent = await _raise(run, alert, run.log, 1)
        except SinkFailed:
            continue  # logged by _raise; still due
        await run.stale.raised(alert, silenced=not sent)


async def _send_to_alertmanager(
    run: _Running,
    sink: AlertmanagerSink,
    alert: Alert,
    log: FilteringBoundLogger,
    deliveries: int,
) -> None:
    """Every alert, once; a failure (or a pause) retries the entry like any sink failure."""

    async def send() -> None:
        await sink.send(alert, log)

    try:
        sent = await run.once.send(sink.name, alert.alert_key, send)
    except (SinkError, SinkPaused, RedisError, TimeoutError) as exc:
        ALERTS.labels(alert.severity, "sink_failed").inc()
        log.warning(
            "alert_sink_failed",
            alert_key=alert.alert_key,
            sinks={sink.name: str(exc)},
            deliveries=deliveries,
        )
        raise SinkFailed(f"alert {alert.alert_key} not taken by {sink.name}") from exc
    if sent:
        log.info("alert_notification_sent", sink=sink.name, kind="alert", alert_key=alert.alert_key)


async def _resend_firing_rate(run: _Running, sink: AlertmanagerSink) -> None:
    """A firing rate or quiet incident, again: Alertmanager resolves an alert not re-sent."""
    for change in (await run.rate.firing(), await run.quiet.firing()):
        if change is None:
            continue
        try:
            await sink.send(change, run.log)
        except (SinkError, SinkPaused) as exc:
            run.log.warning("alertmanager_resend_failed", error=str(exc))


def _fields(alert: Alert) -> dict[str, object]:
    return {f: getattr(alert, f) for f in alert.__struct_fields__}


async def _send_first(
    run: _Running, alert: Alert, log: FilteringBoundLogger, deliveries: int
) -> None:
    """The group's first alert, to every sink at once; raise if any sink did not take it."""

    async def one(sink: Sink) -> bool:
        async def send() -> None:
            await sink.send(alert, log)

        return await run.once.send(sink.name, alert.alert_key, send)

    results = await asyncio.gather(*(one(sink) for sink in run.sinks), return_exceptions=True)
    failed: dict[str, str] = {}
    paused: dict[str, float] = {}
    redis_errors: list[RedisError] = []
    for sink, result in zip(run.sinks, results, strict=True):
        if isinstance(result, SinkPaused):
            paused[sink.name] = result.retry_after_s
        elif isinstance(result, BaseException):
            if not isinstance(result, SinkError | RedisError | TimeoutError):
                raise result
            failed[sink.name] = str(result)
            if isinstance(result, RedisError):
                redis_errors.append(result)
        elif result:
            log.info(
                "alert_notification_sent", sink=sink.name, kind="alert", alert_key=alert.alert_key
            )
    if paused:
        # Delayed, not failed: the outbox sends it when the pause ends, however long.
        outbox_id = await run.outbox.defer(alert, sorted(paused))
        ALERTS.labels(alert.severity, "deferred").inc()
        log.warning(
            "alert_deferred",
            alert_key=alert.alert_key,
            sinks=paused,
            outbox_id=outbox_id,
        )
    if failed:
        ALERTS.labels(alert.severity, "sink_failed").inc()
        log.warning(
            "alert_sink_failed", alert_key=alert.alert_key, sinks=failed, deliveries=deliveries
        )
        failure = SinkFailed(f"alert {alert.alert_key} not taken by {', '.join(sorted(failed))}")
        # Only Redis failed (its once-claims or records): Redis was away, no sink refused.
        raise failure from (redis_errors[0] if len(redis_errors) == len(failed) else None)
    if not paused:
        ALERTS.labels(alert.severity, "sent").inc()


def make_alerts_consumer(options: AlertOptions) -> Consumer:
    """A fresh `alerts` consumer with its own session and upkeep (one per worker)."""
    return consumer("alerts", events=[Started, Stopped, Rejected], batch=True)(
        AlertsConsumer(options)
    )

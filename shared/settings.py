"""One typed settings object, built once from `RTT_*` variables and command-line flags.

Every field is a variable `RTT_<NAME>` and a flag `--<name>`; the flag wins. A bad value
stops the program with one line naming the variable (or flag), what it got and what it
accepts. A command reads and checks only the settings it uses, so a mistake in another
component's variable never stops it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from .credentials import FILE_SUFFIX, SecretFileError, read_secret_files
from .redis_urls import check_redis_url, mask_url

__all__ = [
    "DURATION_FORMS",
    "ENV_PREFIX",
    "REDIS_SETTINGS",
    "SECRET_SETTINGS",
    "SECRET_VARIABLES",
    "ConfigError",
    "Settings",
    "add_arguments",
    "format_duration",
    "load_settings",
    "parse_duration",
]

ENV_PREFIX = "RTT_"
DURATION_FORMS = "500ms, 2s, 5m, 24h, 7d or ISO 8601 such as PT2S"


@dataclass(frozen=True, slots=True)
class AtLeast:
    """The shortest duration a setting accepts (msgspec constrains numbers, not timedeltas)."""

    minimum: timedelta


# Zero means "no limit" or "an error" to Redis (BLOCK 0 waits forever, SET PX 0 fails and
# its event is stored again and again) and a busy loop to a timer (a stats line every
# tick), so each duration has a floor: timeouts and delays 10ms, windows, periods and
# TTLs 100ms (tests run them that short; production values are seconds and more); only
# grace periods and retention may be zero.
Timeout = Annotated[timedelta, AtLeast(timedelta(milliseconds=10))]
Period = Annotated[timedelta, AtLeast(timedelta(milliseconds=100))]
Grace = Annotated[timedelta, AtLeast(timedelta(0))]
Port = Annotated[int, Meta(ge=1, le=65535)]
OptionalPort = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[int, Meta(ge=1)]


def _doc(text: str) -> Meta:
    return Meta(description=text)


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Everything configurable. Durations take `2s`, `500ms`, `5m`, `24h`, `7d` or ISO 8601."""

    # --- shared -------------------------------------------------------------------------
    redis_url: Annotated[
        str | None,
        _doc(
            "redis://, rediss://, unix://, redis+sentinel://h:p[,h:p]/master or "
            "redis+cluster://h:p (rediss+... for TLS); unset under `rtt serve` means the "
            "embedded server"
        ),
    ] = None
    key_prefix: Annotated[str, _doc("prefix of every Redis key")] = "rtt"
    shards: Annotated[
        int, Meta(ge=1, le=16384), _doc("number of event streams rtt:events:{0..S-1}")
    ] = 1
    data_dir: Annotated[str, _doc("where `rtt serve` keeps the embedded server's data")] = ".rtt"
    log_format: Annotated[
        Literal["auto", "json", "console"], _doc("json, console, or auto (console on a TTY)")
    ] = "auto"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], _doc("lowest level logged")
    ] = "info"
    log_phone_numbers: Annotated[bool, _doc("log phone numbers unmasked")] = False
    redis_timeout: Annotated[Timeout, _doc("socket read timeout for Redis commands")] = timedelta(
        seconds=30
    )

    # --- Redis credentials and TLS (managed Redis) ---------------------------------------
    redis_password: Annotated[
        str | None, _doc("Redis password; replaces the one in RTT_REDIS_URL")
    ] = None
    redis_sentinel_password: Annotated[
        str | None, _doc("password of the sentinels (their requirepass); Sentinel URLs only")
    ] = None
    redis_tls_ca_path: Annotated[
        str | None, _doc("CA bundle (PEM) that signed the Redis server's certificate")
    ] = None
    redis_tls_cert_path: Annotated[
        str | None, _doc("client certificate (PEM), for a Redis that asks for one")
    ] = None
    redis_tls_key_path: Annotated[str | None, _doc("private key (PEM) of that certificate")] = None
    redis_tls_verify: Annotated[
        bool, _doc("check the Redis server's certificate and host name (rediss:// URLs)")
    ] = True

    # --- receiver -----------------------------------------------------------------------
    host: Annotated[str, _doc("address the receiver listens on")] = "0.0.0.0"
    port: Annotated[Port, _doc("port the receiver listens on")] = 8080
    path: Annotated[str, _doc("path Bandwidth posts events to")] = "/realTimeTranscriptionEvents"
    processes: Annotated[
        int, Meta(ge=1, le=1024), _doc("receiver processes sharing the port (SO_REUSEPORT)")
    ] = 1
    basic_auth: Annotated[
        list[str], _doc("user:password pairs, comma separated (several for rotation)")
    ] = []
    auth_realm: Annotated[str, _doc("realm named in the WWW-Authenticate challenge")] = "rtt-events"
    allow_cidrs: Annotated[list[str], _doc("networks allowed to post; empty allows all")] = []
    trusted_proxies: Annotated[
        list[str], _doc("proxy networks whose X-Forwarded-For is believed")
    ] = []
    max_body_size: Annotated[int, Meta(ge=1024), _doc("largest accepted body, bytes")] = 64 * 1024
    max_header_size: Annotated[int, Meta(ge=1024), _doc("largest accepted header line, bytes")] = (
        8190
    )
    read_timeout: Annotated[Timeout, _doc("time a client has to send its request")] = timedelta(
        seconds=10
    )
    store_timeout: Annotated[Timeout, _doc("deadline for Redis before the spool takes over")] = (
        timedelta(seconds=2)
    )
    spool_dir: Annotated[str, _doc("directory of the local spool used while Redis is down")] = (
        ".rtt/spool"
    )
    dedup_window: Annotated[Period, _doc("how long a repeated delivery is recognised")] = timedelta(
        hours=24
    )
    forensic_max_len: Annotated[Positive, _doc("entries kept on rtt:rejected and rtt:unknown")] = (
        10_000
    )
    store_batch_max: Annotated[Positive, _doc("most events sent to Redis in one round trip")] = 512
    # Replication: what a 204 promises when the master fails over.
    store_replicas: Annotated[
        int, Meta(ge=0), _doc("replicas that must have an event before its 204 (WAIT); 0: off")
    ] = 0
    store_replicas_timeout: Annotated[
        Timeout, _doc("wait for them this long, then the spool takes the event")
    ] = timedelta(milliseconds=500)

    # --- worker -------------------------------------------------------------------------
    consumer: Annotated[list[str], _doc("extra consumers to run, as pkg.module:name")] = []
    worker_id: Annotated[
        str | None, _doc("stable member name in the consumer groups (default host-pid)")
    ] = None
    batch_size: Annotated[Positive, _doc("entries read per XREADGROUP")] = 500
    block: Annotated[Timeout, _doc("how long XREADGROUP waits for new entries")] = timedelta(
        seconds=2
    )
    concurrency: Annotated[Positive, _doc("handlers running at once, per consumer")] = 64
    max_deliveries: Annotated[Positive, _doc("deliveries before an entry is dead-lettered")] = 5
    handler_timeout: Annotated[
        Timeout, _doc("longest a handler call may run; it is then cancelled and retried")
    ] = timedelta(minutes=1)
    retry_base: Annotated[Timeout, _doc("first retry delay; doubles each time")] = timedelta(
        seconds=1
    )
    retry_max: Annotated[Timeout, _doc("longest retry delay")] = timedelta(minutes=5)
    heartbeat_interval: Annotated[Timeout, _doc("how often a worker says it is alive")] = timedelta(
        seconds=2
    )
    heartbeat_ttl: Annotated[Period, _doc("silence after which a worker is presumed dead")] = (
        timedelta(seconds=10)
    )
    claim_idle: Annotated[Period, _doc("idle time after which any pending entry is reclaimed")] = (
        timedelta(minutes=5)
    )
    shutdown_timeout: Annotated[Grace, _doc("grace period for in-flight handlers")] = timedelta(
        seconds=30
    )
    stream_retention: Annotated[Grace, _doc("how long acknowledged entries are kept")] = timedelta(
        days=7
    )
    stream_max_len: Annotated[
        Positive, _doc("emergency cap on a stream's length; drops are logged and counted")
    ] = 5_000_000
    dlq_max_len: Annotated[Positive, _doc("entries kept on rtt:dlq")] = 100_000
    stats_interval: Annotated[Period, _doc("period of the worker_stats log line")] = timedelta(
        seconds=30
    )
    worker_metrics_port: Annotated[
        OptionalPort, _doc("port of the worker's /metrics; 0 turns it off")
    ] = 9464
    worker_metrics_host: Annotated[
        str | None, _doc("address the worker's /metrics listens on (default: RTT_HOST)")
    ] = None

    # --- alerts -------------------------------------------------------------------------
    alert_causes: Annotated[list[str], _doc("causes that raise an error alert")] = msgspec.field(
        default_factory=lambda: ["connection-error", "error"]
    )
    alert_warning_causes: Annotated[
        list[str], _doc("Rejected causes that raise a warning alert")
    ] = msgspec.field(default_factory=lambda: ["duplicate", "track-limit"])
    alert_webhook_url: Annotated[str | None, _doc("generic JSON webhook for alerts")] = None
    alert_slack_webhook_url: Annotated[str | None, _doc("Slack incoming-webhook URL")] = None
    alert_pagerduty_routing_key: Annotated[str | None, _doc("PagerDuty Events v2 routing key")] = (
        None
    )
    alert_pagerduty_url: Annotated[str, _doc("PagerDuty Events API v2 endpoint")] = (
        "https://events.pagerduty.com/v2/enqueue"
    )
    alert_alertmanager_url: Annotated[
        str | None, _doc("Alertmanager base URL; every alert goes to its /api/v2/alerts")
    ] = None
    alert_alertmanager_resolve_after: Annotated[
        Period, _doc("endsAt of a one-shot alert in Alertmanager, after it starts")
    ] = timedelta(hours=1)
    alert_alertmanager_resend: Annotated[
        Period, _doc("how often a firing rate alert is re-sent to Alertmanager")
    ] = timedelta(minutes=1)
    alert_sink_timeout: Annotated[Timeout, _doc("deadline of one call to an alert sink")] = (
        timedelta(seconds=5)
    )
    alert_sink_retries: Annotated[
        int, Meta(ge=0, le=100), _doc("quick retries inside one delivery")
    ] = 2
    alert_group_by: Annotated[list[str], _doc("alert fields that form the group key")] = (
        msgspec.field(default_factory=lambda: ["cause", "destination_host"])
    )
    alert_group_interval: Annotated[Period, _doc("window of one grouped summary")] = timedelta(
        minutes=1
    )
    alert_repeat_interval: Annotated[Period, _doc("repeat of a group still firing")] = timedelta(
        hours=4
    )
    alert_once_ttl: Annotated[Period, _doc("how long an alert is remembered as sent")] = timedelta(
        days=7
    )
    alert_rate_threshold: Annotated[float, Meta(ge=0, le=1), _doc("share of failed stops")] = 0.05
    alert_rate_min_stops: Annotated[Positive, _doc("stops needed before the rate rule fires")] = 20
    alert_rate_window: Annotated[Period, _doc("sliding window of the rate rule")] = timedelta(
        minutes=5
    )
    # --- alerts on what never arrived ---
    alert_stale_after: Annotated[
        Grace, _doc("alert on a Started with no Stopped or Rejected after this; 0: off")
    ] = timedelta(hours=4)
    alert_quiet_after: Annotated[
        Grace, _doc("alert when no event at all was received for this; 0: off")
    ] = timedelta(0)

    @property
    def worker_metrics_listen_host(self) -> str:
        """Where the worker's /metrics listens: RTT_WORKER_METRICS_HOST, else RTT_HOST."""
        return self.worker_metrics_host or self.host


class ConfigError(Exception):
    """A setting is wrong; the message names the variable or flag and what it expects."""


_FIELDS = {f.name: f for f in msgspec.structs.fields(Settings)}
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SHORT_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _base_type(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _is_list(name: str) -> bool:
    return get_origin(_base_type(_FIELDS[name].type)) is list


def _is_duration(name: str) -> bool:
    return _base_type(_FIELDS[name].type) is timedelta


def _is_bool(name: str) -> bool:
    return _base_type(_FIELDS[name].type) is bool


def _metadata(name: str) -> tuple[Any, ...]:
    return get_args(_FIELDS[name].type)[1:]


def _description(name: str) -> str:
    for arg in _metadata(name):
        if isinstance(arg, Meta) and arg.description:
            return arg.description
    return ""


def _minimum(name: str) -> timedelta | None:
    for arg in _metadata(name):
        if isinstance(arg, AtLeast):
            return arg.minimum
    return None


def parse_duration(text: str) -> str | float:
    """`500ms`, `2s`, `5m`, `24h`, `7d` -> seconds; anything else goes to msgspec (ISO 8601)."""
    match = _SHORT_DURATION.match(text)
    if match:
        return float(match[1]) * _UNIT_S[match[2]]
    return text


def format_duration(value: timedelta) -> str:
    """A duration as a user would type it: `24h`, `500ms`, `90s`."""
    ms = round(value.total_seconds() * 1000)
    for unit in ("d", "h", "m", "s"):
        size = round(_UNIT_S[unit] * 1000)
        # One day reads better as 24h; a week as 7d.
        if ms and ms % size == 0 and (unit != "d" or ms >= 2 * size):
            return f"{ms // size}{unit}"
    return f"{ms}ms" if ms else "0s"


def _coerce(name: str, raw: str) -> Any:
    if _is_list(name):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if _is_duration(name):
        return parse_duration(raw)
    if _is_bool(name):
        word = raw.strip().lower()
        # Anything else stays a string, which msgspec then refuses as a bool.
        return True if word in _TRUE else False if word in _FALSE else raw
    if raw == "" and _FIELDS[name].default is None:
        return None
    return raw


def _check_networks(values: list[str]) -> str | None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"expected networks such as 10.0.0.0/8 or single addresses; {value!r} is neither"
    return None


def _check_basic_auth(values: list[str]) -> str | None:
    for pair in values:
        if ":" not in pair or pair.startswith(":"):
            return "expected user:password pairs, comma separated; one has no user or no colon"
    return None


def _check_path(value: str) -> str | None:
    return None if value.startswith("/") else "expected a path starting with /"


def _check_http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "expected an http:// or https:// URL"
    return None


def _check_redis_url(value: str | None) -> str | None:
    return None if value is None else check_redis_url(value)


# Checks msgspec's types cannot express; each says what is wrong, or None.
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "redis_url": _check_redis_url,
    "allow_cidrs": _check_networks,
    "trusted_proxies": _check_networks,
    "basic_auth": _check_basic_auth,
    "path": _check_path,
    "alert_webhook_url": _check_http_url,
    "alert_slack_webhook_url": _check_http_url,
    "alert_pagerduty_url": _check_http_url,
    "alert_alertmanager_url": _check_http_url,
}
# (shorter, longer, strictly): a heartbeat must be renewed before it expires; the longest
# retry delay cannot be below the first one.
_ORDERED = (
    ("heartbeat_interval", "heartbeat_ttl", True),
    ("retry_base", "retry_max", False),
)


def _minimum_text(name: str) -> str:
    minimum = _minimum(name)
    if minimum is None:
        return ""
    return "at least 0s" if not minimum else f"at least {format_duration(minimum)}"


# Settings that may hold a credential: each can come from a file, `RTT_<NAME>_FILE`.
SECRET_SETTINGS = tuple(
    name
    for name in (
        "basic_auth",
        "redis_url",
        "redis_password",
        "redis_sentinel_password",
        "alert_webhook_url",
        "alert_slack_webhook_url",
        "alert_pagerduty_routing_key",
        "alert_alertmanager_url",
    )
    if name in _FIELDS
)
SECRET_VARIABLES = tuple(ENV_PREFIX + name.upper() for name in SECRET_SETTINGS)
# Values never echoed in an error line: they are, or hold, credentials (a Redis URL is
# shown with its password masked).
_SECRET = frozenset(SECRET_SETTINGS) - {"redis_url"}


def _got(name: str, value: Any) -> str:
    if name in _SECRET:
        return "a value (not shown)"
    text = value if isinstance(value, str) else str(value)
    return repr(mask_url(text) if name.endswith("_url") else text)


def load_settings(
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    names: Iterable[str] | None = None,
) -> Settings:
    """Build settings from the environment, then flags. Raises ConfigError on a bad value.

    With `names`, only those settings are read and checked; the others keep their defaults.
    """
    env = os.environ if env is None else env
    wanted = set(_FIELDS if names is None else names)
    sources: dict[str, str] = {}
    given: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    try:
        from_files = read_secret_files(
            env, [ENV_PREFIX + name.upper() for name in SECRET_SETTINGS if name in wanted]
        )
    except SecretFileError as exc:
        raise ConfigError(str(exc)) from None
    for key, value in from_files.items():
        name = key[len(ENV_PREFIX) :].lower()
        raw[name] = _coerce(name, value)
        sources[name] = key + FILE_SUFFIX
        given[name] = value
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in _FIELDS and name in wanted:
            raw[name] = _coerce(name, value)
            sources[name] = key
            given[name] = value
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        raw[name] = _coerce(name, value) if isinstance(value, str) else value
        sources[name] = "--" + name.replace("_", "-")
        given[name] = value

    def fail(name: str, expected: str) -> ConfigError:
        source = sources.get(name, ENV_PREFIX + name.upper())
        got = f"got {_got(name, given[name])}; " if name in given else ""
        return ConfigError(f"{source}: {got}{expected}")

    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$.")
        name = where.rstrip("`").split(".")[0].split("[")[0]
        base = _base_type(_FIELDS[name].type)
        if _is_duration(name):
            message = f"expected a duration: {DURATION_FORMS}"
        elif _is_bool(name):
            message = "expected 1 or 0 (or true/false, yes/no, on/off)"
        elif get_origin(base) is Literal:
            message = f"expected one of {', '.join(get_args(base))}"
        else:
            message = message.split(", got ")[0]
            message = message[:1].lower() + message[1:]
        raise fail(name, message) from None
    for name in sorted(wanted):
        value = getattr(settings, name)
        minimum = _minimum(name)
        if minimum is not None and value < minimum:
            raise fail(name, f"expected a duration of {_minimum_text(name)} ({DURATION_FORMS})")
        check = _CHECKS.get(name)
        problem = check(value) if check is not None else None
        if problem:
            raise fail(name, problem)
    if wanted >= {"redis_url", *_TLS_PATHS}:
        _check_redis_tls(settings, fail)
    sentinel_url = (settings.redis_url or "").partition("://")[0].endswith("+sentinel")
    if settings.redis_sentinel_password is not None and settings.redis_url and not sentinel_url:
        raise fail(
            "redis_sentinel_password",
            "RTT_REDIS_URL is not a Sentinel URL (redis+sentinel://, rediss+sentinel://)",
        )
    for shorter, longer, strict in _ORDERED:
        if not {shorter, longer} <= wanted:
            continue
        low, high = getattr(settings, shorter), getattr(settings, longer)
        if high > low or (high == low and not strict):
            continue
        relation = "longer than" if strict else "at least"
        if longer in given or shorter not in given:
            other = f"{ENV_PREFIX}{shorter.upper()} ({format_duration(low)})"
            raise fail(longer, f"expected {relation} {other}")
        other = f"{ENV_PREFIX}{longer.upper()} ({format_duration(high)})"
        raise fail(shorter, f"expected {'shorter than' if strict else 'at most'} {other}")
    # Only with replicas: WAIT must answer before the store deadline gives up on Redis.
    if settings.store_replicas and {"store_replicas_timeout", "store_timeout"} <= wanted:
        wait, deadline = settings.store_replicas_timeout, settings.store_timeout
        if wait >= deadline:
            other = f"{ENV_PREFIX}STORE_TIMEOUT ({format_duration(deadline)})"
            raise fail("store_replicas_timeout", f"expected shorter than {other}")
    return settings


_TLS_PATHS = ("redis_tls_ca_path", "redis_tls_cert_path", "redis_tls_key_path")


def _check_redis_tls(settings: Settings, fail: Callable[[str, str], ConfigError]) -> None:
    """The TLS files must be readable, and only make sense on a TLS URL."""
    given = [name for name in _TLS_PATHS if getattr(settings, name) is not None]
    for name in given:
        path = getattr(settings, name)
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise fail(name, f"cannot read it: {exc.strerror}") from None
    if (settings.redis_tls_cert_path is None) != (settings.redis_tls_key_path is None):
        raise ConfigError(
            "RTT_REDIS_TLS_CERT_PATH and RTT_REDIS_TLS_KEY_PATH go together: set both or neither"
        )
    url = settings.redis_url
    if given and url and not url.partition("://")[0].startswith("rediss"):
        raise fail(
            given[0],
            "RTT_REDIS_URL is not a TLS URL: use rediss:// (rediss+sentinel://, rediss+cluster://)",
        )


def _shown_default(name: str) -> str:
    field = _FIELDS[name]
    default = (
        field.default_factory() if field.default_factory is not msgspec.NODEFAULT else field.default
    )
    if isinstance(default, timedelta):
        return format_duration(default)
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, list):
        return ",".join(default) or "none"
    return "none" if default is None else str(default)


def add_arguments(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Add a flag per setting; defaults stay None so the environment shows through."""
    group = parser.add_argument_group("settings (flag, or environment variable)")
    for name in names:
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        accepts = f"; {_minimum_text(name)}" if _minimum(name) is not None else ""
        # argparse formats help with %; a literal one must be doubled.
        text = f"{_description(name)} [{env}; default {_shown_default(name)}{accepts}]"
        help_text = text.replace("%", "%%")
        if _is_list(name):
            group.add_argument(flag, dest=name, action="append", help=help_text)
        else:
            group.add_argument(flag, dest=name, help=help_text)


def overrides_from(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """Flag values given on the command line (lists may be repeated or comma separated)."""
    result: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(value)
        result[name] = value
    return result


# How to reach Redis: every command that talks to Redis takes these.
REDIS_SETTINGS = (
    "redis_url",
    "redis_password",
    "redis_sentinel_password",
    "redis_tls_ca_path",
    "redis_tls_cert_path",
    "redis_tls_key_path",
    "redis_tls_verify",
)
RECEIVER_SETTINGS = (
    *REDIS_SETTINGS,
    "key_prefix",
    "shards",
    "host",
    "port",
    "path",
    "processes",
    "basic_auth",
    "auth_realm",
    "allow_cidrs",
    "trusted_proxies",
    "max_body_size",
    "max_header_size",
    "read_timeout",
    "store_timeout",
    "spool_dir",
    "dedup_window",
    "forensic_max_len",
    "store_batch_max",
    "store_replicas",
    "store_replicas_timeout",
    "shutdown_timeout",
    "log_format",
    "log_level",
    "log_phone_numbers",
    "redis_timeout",
)
WORKER_SETTINGS = (
    *REDIS_SETTINGS,
    "key_prefix",
    "shards",
    "consumer",
    "worker_id",
    "batch_size",
    "block",
    "concurrency",
    "max_deliveries",
    "retry_base",
    "retry_max",
    "heartbeat_interval",
    "heartbeat_ttl",
    "claim_idle",
    "shutdown_timeout",
    "stream_retention",
    "stream_max_len",
    "dlq_max_len",
    "stats_interval",
    "worker_metrics_port",
    "worker_metrics_host",
    "host",  # where /metrics listens unless RTT_WORKER_METRICS_HOST says
    "log_format",
    "log_level",
    "log_phone_numbers",
    "redis_timeout",
    "handler_timeout",
    # The alerts' once-records and the acknowledgements wait for replicas too.
    "store_replicas",
    "store_replicas_timeout",
    *(name for name in _FIELDS if name.startswith("alert_")),
)
ALL_SETTINGS = tuple(_FIELDS)

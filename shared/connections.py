"""Redis connections: one factory for plain, TLS, Sentinel and Cluster URLs.

Every component (receiver, worker, `rtt serve`, operator commands) opens Redis here, so the
TLS settings, the password and the reporting of refusals (TLS, password, ACL) are the same
everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, cast
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .logs import get_logger
from .redis_urls import mask_url
from .redis_values import as_text
from .settings import Settings

__all__ = [
    "REDIS_DOWN",
    "FollowingSentinelPool",
    "PermissionDenied",
    "RedisRefused",
    "SentinelRefused",
    "check_redis",
    "create_redis",
    "explain_redis_error",
    "is_permission_denied",
    "on_permission_denied",
    "plain_port_hint",
    "redis_user",
    "report_permission_denied",
]

# What redis-py raises when the server is down, unreachable or too slow (OSError: a socket
# error it did not wrap), as opposed to a reply it refused.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
TLS_SCHEMES = frozenset({"rediss", "rediss+sentinel", "rediss+cluster"})
_CONNECT_TIMEOUT_S = 5.0
# redis-py 8 caps a pool at 100 connections and fails the next command at once
# (MaxConnectionsError, a ConnectionError): a worker under load, 64 handlers per consumer
# each with its own calls beside its readers, went past it and failed handlers as if Redis
# were down. Redis's own limit (maxclients, 10,000 by default) is the one to meet.
_MAX_CONNECTIONS = 10_000
log = get_logger()


class RedisRefused(Exception):
    """Redis will not serve these settings (TLS, password, ACL): waiting will not help.

    The message is one line that names the setting to change.
    """


class SentinelRefused(RedisError):
    """A sentinel refused these settings (its password, TLS).

    A RedisError but not a ConnectionError: redis-py retries neither it nor the discovery
    of the master that raised it, so a wrong setting is one line at once, not a wait.
    """


class PermissionDenied(RedisRefused):
    """A NOPERM reply: the ACL user lacks a command, a key pattern or a channel."""

    def __init__(self, message: str, *, command: str, user: str) -> None:
        super().__init__(message)
        self.command = command
        self.user = user


def redis_user(settings: Settings, url: str | None = None) -> str:
    """The ACL user these settings log in as (`default` without one in the URL)."""
    parts = urlsplit(url or settings.redis_url or "")
    return unquote(parts.username) if parts.username else "default"


def _tls_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "ssl_cert_reqs": "required" if settings.redis_tls_verify else "none",
        "ssl_check_hostname": settings.redis_tls_verify,
        "ssl_ca_certs": settings.redis_tls_ca_path,
        "ssl_certfile": settings.redis_tls_cert_path,
        "ssl_keyfile": settings.redis_tls_key_path,
    }
    return {name: value for name, value in options.items() if value is not None}


def is_permission_denied(exc: BaseException) -> bool:
    """NOPERM, or its form from inside a script (`ACL failure in script: ...`), also as a
    pipeline reports it (`Command # 2 (...) of pipeline caused error: ...`)."""
    text = _reply_text(str(exc))
    return isinstance(exc, NoPermissionError) or (
        isinstance(exc, ResponseError)
        # Redis 7.2+ and Valkey; Redis 7.0 words it the second way.
        and (text.startswith("ACL failure in script") or "can't run this command" in text)
    )


_DENIED_COMMAND = re.compile(r"run the '([^']+)' command")
_PIPELINE_COMMAND = re.compile(r"^Command # \d+ \((\S+)")


def _reply_text(text: str) -> str:
    """The server's reply in a pipeline's error (a cluster pipeline shows it as a tuple)."""
    if _PIPELINE_COMMAND.match(text):
        text = text.split("caused error: ", 1)[-1]
        if text.startswith(("('", '("')) and text.endswith(("',)", '",)')):
            text = text[2:-3]
    return text


class _Denials:
    """Reports each refused (command, user) once, and tells whoever listens."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.user = redis_user(settings, url)
        self.seen: set[str] = set()
        self.listeners: list[Callable[[PermissionDenied], None]] = []

    def report(self, command: object, exc: ResponseError) -> PermissionDenied:
        text = str(exc)
        pipelined = _PIPELINE_COMMAND.match(text)
        if pipelined:
            command = pipelined[1]
            text = _reply_text(text)
        named = _DENIED_COMMAND.search(text)
        name = (named[1] if named else as_text(command, errors="replace")).upper()
        denied = PermissionDenied(
            f"Redis user {self.user!r} may not run {name} (NOPERM: {text}): grant it to the "
            f"user's ACL (README: Managed Redis) or change the user in RTT_REDIS_URL",
            command=name,
            user=self.user,
        )
        if name not in self.seen:
            self.seen.add(name)
            log.error("redis_permission_denied", command=name, user=self.user, error=text)
            for listener in self.listeners:
                listener(denied)
        return denied


async def _reporting(denials: _Denials, replies: Awaitable[list[Any]]) -> list[Any]:
    """A pipeline's replies, each NOPERM among them (or raised) reported."""
    try:
        answered = await replies
    except ResponseError as exc:
        if is_permission_denied(exc):
            denials.report("pipeline", exc)
        raise
    for reply in answered:
        if isinstance(reply, ResponseError) and is_permission_denied(reply):
            denials.report("pipeline", reply)
    return answered


class _ReportingPipeline(Pipeline):
    denials: _Denials

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await _reporting(self.denials, super().execute(raise_on_error))


class _ReportingClusterPipeline(ClusterPipeline):
    """A cluster pipeline (the receiver's script calls, the worker's acknowledgements and
    heartbeats) reports NOPERM as the cluster client does."""

    denials: _Denials

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        return await _reporting(self.denials, super().execute(raise_on_error, allow_redirections))


class _ReportingRedis(Redis):
    """A client that says once which command the ACL refused, and to whom."""

    denials: _Denials

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except ResponseError as exc:
            if is_permission_denied(exc):
                self.denials.report(args[0] if args else "?", exc)
            raise

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = _ReportingPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.denials = self.denials
        return pipe


class _ClusterConnection(Connection):
    """A cluster node's connection that says it is down when it was closed under a command.

    redis-py's cluster client disconnects a node's connections, those in use included,
    when it refreshes its view of the cluster (a node down, a failover). A command then
    writes to a connection closed under it: uvloop raises RuntimeError ("the handler is
    closed"), or redis-py AttributeError once it has dropped the stream, and neither the
    cluster client nor its callers take that for a node being down. A ConnectionError
    instead makes the client refresh the topology and retry, and callers back off.
    """

    async def _send_packed_command(self, command: Any) -> None:
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            raise RedisConnectionError(f"Connection to {self._host_error()} closed while in use")
        await super()._send_packed_command(command)


class _ClusterSSLConnection(_ClusterConnection, SSLConnection):
    pass


class _ReportingCluster(RedisCluster):
    denials: _Denials

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # RedisCluster takes no connection class: set it where it makes the nodes.
        options = self.nodes_manager.connection_kwargs
        ssl_used = options.get("connection_class") is SSLConnection
        options["connection_class"] = _ClusterSSLConnection if ssl_used else _ClusterConnection
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = options["connection_class"]

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        """No node reached is a connection error, as it is for one node.

        redis-py raises RedisClusterException, which is not a RedisError: callers would
        take it for a bug, and the TLS or protocol refusal it quotes would never be named.
        """
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            # A NOPERM (CLUSTER SLOTS refused) reads "cluster mode is not enabled" there.
            for cause in _causes(exc):
                if isinstance(cause, ResponseError) and is_permission_denied(cause):
                    self.denials.report("CLUSTER", cause)
                    raise cause from None
            if not str(exc).startswith(_CLUSTER_UNREACHABLE):
                raise
            raise RedisConnectionError(str(exc)) from exc.__cause__ or exc.__context__

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except ResponseError as exc:
            if is_permission_denied(exc):
                self.denials.report(args[0] if args else "?", exc)
            raise

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # its error: not supported
        # (redis-py's stub leaves an attribute abstract that the class sets at run time.)
        pipe = _ReportingClusterPipeline(self, transaction)  # type: ignore[abstract]
        pipe.denials = self.denials
        return pipe


_CLUSTER_UNREACHABLE = "Redis Cluster cannot be connected"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    cause: BaseException | None = exc
    while cause is not None:
        yield cause
        cause = cause.__cause__ or cause.__context__


def on_permission_denied(redis: Redis, listener: Callable[[PermissionDenied], None]) -> None:
    """Call `listener` the first time each command is refused by the ACL."""
    denials: _Denials | None = getattr(redis, "denials", None)
    if denials is not None:
        denials.listeners.append(listener)


def report_permission_denied(redis: Redis, command: str, exc: ResponseError) -> None:
    """For callers that read replies themselves (the receiver's packed writes)."""
    denials: _Denials | None = getattr(redis, "denials", None)
    if denials is not None:
        denials.report(command, exc)


class _SentinelClient(Redis):
    """A client of one sentinel that turns a refusal into SentinelRefused.

    redis-py asks the next sentinel after any connection error and, when none answered,
    raises "no master found", which reads like a Redis that is down and is retried.
    """

    settings: Settings
    url: str

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            line = _explain_sentinel(exc, self.settings, self.url)
            if line is None:
                raise
            raise SentinelRefused(line) from exc


def _explain_sentinel(exc: BaseException, settings: Settings, url: str) -> str | None:
    if isinstance(exc, AuthenticationError):
        where = f"Sentinel at {_address(url)}"
        if settings.redis_sentinel_password is None:
            return (
                f"{where} asks for a password: set RTT_REDIS_SENTINEL_PASSWORD to the "
                f"sentinels' requirepass"
            )
        return (
            f"{where} refused RTT_REDIS_SENTINEL_PASSWORD ({exc}): set it to the sentinels' "
            f"requirepass, or unset it if they have none"
        )
    return explain_redis_error(exc, settings, url, what="Sentinel")


def _sentinel_clients(
    hosts: list[tuple[str, int]], settings: Settings, scheme: str, **options: Any
) -> list[Redis]:
    clients: list[Redis] = []
    for host, port in hosts:
        client = _SentinelClient(host=host, port=port, **options)
        client.settings = settings
        client.url = f"{scheme}://{host}:{port}"
        clients.append(client)
    return clients


# How often a client asks the sentinels which node is the master.
MASTER_CHECK_S = 0.5


class FollowingSentinelPool(SentinelConnectionPool):
    """Asks the sentinels for the master at most every MASTER_CHECK_S, not only when a
    connection breaks.

    A forced failover (`SENTINEL FAILOVER`) leaves the old master running, still a master,
    until the sentinels reconfigure it as a replica some seconds later. redis-py keeps
    its connections to it meanwhile, and every write it acknowledges is then discarded
    when it resynchronises from the new master. Asking again moves the idle connections
    to the new master; a connection that was in use then is moved when it is next taken
    (redis-py would hand it out again still on the old master).
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._next_check = 0.0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Connection:
        now = time.monotonic()
        if self.master_address is not None and now >= self._next_check:
            self._next_check = now + MASTER_CHECK_S
            # Sentinels unreachable: the connection below says what is wrong.
            with contextlib.suppress(RedisError, OSError):
                await self.get_master_address()  # type: ignore[no-untyped-call]
        connection: Connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        master = self.master_address
        if master is not None and (connection.host, connection.port) != tuple(master):
            await connection.disconnect()
            try:
                # connect() asks for the master; a reconnect on the next command would not.
                await connection.connect()  # type: ignore[no-untyped-call]
            except BaseException:
                await self.release(connection)
                raise
        return connection


def create_redis(settings: Settings, *, url: str | None = None) -> Redis:
    """Open a client for `url` (default `settings.redis_url`).

    redis-py sets a 5 s socket timeout by default and does not extend it for a blocking
    XREADGROUP (redis-py #2807), so the read timeout is set on purpose, above `block`.
    """
    url = url or settings.redis_url
    if not url:
        raise ValueError("no Redis URL: set RTT_REDIS_URL")
    read_timeout_s = max(settings.redis_timeout.total_seconds(), settings.block.total_seconds() + 5)
    common: dict[str, Any] = {
        "socket_timeout": read_timeout_s,
        "socket_connect_timeout": _CONNECT_TIMEOUT_S,
        "health_check_interval": 15,
        "max_connections": _MAX_CONNECTIONS,
    }
    if settings.redis_password is not None:
        url = _with_password(url, settings.redis_password)
    parts = urlsplit(url)
    tls = parts.scheme in TLS_SCHEMES
    tls_options = _tls_options(settings) if tls else {}
    denials = _Denials(settings, url)
    client: Any
    if parts.scheme in {"redis+cluster", "rediss+cluster"}:
        scheme = "rediss" if tls else "redis"
        client = _ReportingCluster.from_url(
            f"{scheme}://{parts.netloc}{parts.path}", **common, **tls_options
        )
    elif parts.scheme in {"redis+sentinel", "rediss+sentinel"}:
        hosts = []
        for hostport in parts.netloc.rsplit("@", 1)[-1].split(","):
            host, _, port = hostport.partition(":")
            hosts.append((host, int(port or 26379)))
        path = parts.path.strip("/").split("/")
        master = path[0] if path and path[0] else "mymaster"
        db = int(path[1]) if len(path) > 1 else 0
        password = unquote(parts.password) if parts.password is not None else None
        username = unquote(parts.username) if parts.username else None
        ssl_options = {"ssl": True, **tls_options} if tls else {}
        sentinel_options: dict[str, Any] = {
            "socket_timeout": read_timeout_s,
            "socket_connect_timeout": _CONNECT_TIMEOUT_S,
            # The sentinels have a password of their own, if any (not the master's).
            "password": settings.redis_sentinel_password,
            # One try each: the discovery moves on to the next sentinel, and the master's
            # connection retries the whole round.
            "retry": Retry(NoBackoff(), 0),
            # The sentinels speak TLS too when the URL says rediss+sentinel.
            **ssl_options,
        }
        # redis-py types Sentinel's constructor from 8.2 on; earlier releases do not.
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            hosts,
            sentinel_kwargs=sentinel_options,
            username=username,
            password=password,
            db=db,
            **common,
            **ssl_options,
        )
        sentinel.sentinels = _sentinel_clients(
            hosts, settings, "rediss" if tls else "redis", **sentinel_options
        )
        client = sentinel.master_for(
            master, redis_class=_ReportingRedis, connection_pool_class=FollowingSentinelPool
        )
    else:
        client = _ReportingRedis.from_url(url, **common, **tls_options)
    client.denials = denials
    return cast(Redis, client)


def _with_password(url: str, password: str) -> str:
    """The URL with `password` in it (redis-py lets a URL's password win over keywords)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0] if at else ""
    netloc = f"{user}:{quote(password, safe='')}@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _address(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or mask_url(url)


# OpenSSL's reasons under X509_V_FLAG_X509_STRICT, which `ssl.create_default_context`
# sets from Python 3.13 on: the CA may be the right one, the certificate is not.
_STRICT_CHECKS: Final = ("key identifier", "marked critical", "key usage", "x.509v3", "subject alt")


def explain_redis_error(
    exc: BaseException, settings: Settings, url: str | None = None, *, what: str = "Redis"
) -> str | None:
    """One line naming the setting to change, for a refusal waiting will not cure; None
    for a Redis that is merely down or slow (or an error this does not recognise)."""
    url = url or settings.redis_url or ""
    where = f"{what} at {_address(url)}"
    tls = urlsplit(url).scheme in TLS_SCHEMES
    if isinstance(exc, PermissionDenied | RedisRefused | SentinelRefused):
        return str(exc)
    if isinstance(exc, AuthenticationError):
        return (
            f"{where} refused user {redis_user(settings, url)!r} ({exc}): check the user and "
            f"password in RTT_REDIS_URL (or RTT_REDIS_PASSWORD)"
        )
    if is_permission_denied(exc):
        return f"{where}: NOPERM {exc}: grant it to the user's ACL (README: Managed Redis)"
    text = " ".join(str(part) for part in (exc, exc.__cause__ or exc.__context__) if part)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        if "expired" in text:
            return (
                f"{where}: its TLS certificate has expired; renew it on the server "
                f"(RTT_REDIS_TLS_VERIFY=false skips the check, for tests only)"
            )
        if "Hostname mismatch" in text or "IP address mismatch" in text:
            return (
                f"{where}: its TLS certificate is not for this host name; connect by a name "
                f"the certificate holds (RTT_REDIS_URL)"
            )
        reason = _ssl_reason(text)
        if any(check in reason.lower() for check in _STRICT_CHECKS):
            return (
                f"{where}: its TLS certificate fails a strict X.509 check ({reason}), which "
                f"Python verifies from 3.13 on: reissue it with what it lacks"
            )
        ca = settings.redis_tls_ca_path
        return f"{where}: its TLS certificate is not trusted ({reason}): " + (
            f"RTT_REDIS_TLS_CA_PATH ({ca}) does not hold the CA that signed it"
            if ca
            else "set RTT_REDIS_TLS_CA_PATH to the CA bundle that signed it"
        )
    if "CERTIFICATE_REQUIRED" in text:
        return (
            f"{where} asks for a client certificate: set RTT_REDIS_TLS_CERT_PATH and "
            f"RTT_REDIS_TLS_KEY_PATH"
        )
    if "ALERT_CERTIFICATE_EXPIRED" in text:
        return (
            f"{where} refused the client certificate: it has expired; renew "
            f"RTT_REDIS_TLS_CERT_PATH ({settings.redis_tls_cert_path})"
        )
    if "ALERT_UNKNOWN_CA" in text or "ALERT_BAD_CERTIFICATE" in text:
        return (
            f"{where} refused the client certificate ({_ssl_reason(text)}): "
            f"RTT_REDIS_TLS_CERT_PATH ({settings.redis_tls_cert_path}) is not signed by a CA "
            f"the server trusts"
        )
    if "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text:
        return f"{where} does not speak TLS: use redis:// instead of rediss:// in RTT_REDIS_URL"
    if isinstance(exc, ssl.SSLError) or "[SSL" in text:
        return f"{where}: TLS failed ({_ssl_reason(text)}): check the RTT_REDIS_TLS_* settings"
    if tls and _closed_at_once(text):
        # TLS 1.3: the server judges the client certificate after the handshake; its alert
        # may be lost to the reset that follows it.
        cert = settings.redis_tls_cert_path
        if cert is None:
            return (
                f"{where} closed the TLS connection at once: it probably asks for a client "
                f"certificate: set RTT_REDIS_TLS_CERT_PATH and RTT_REDIS_TLS_KEY_PATH"
            )
        return (
            f"{where} closed the TLS connection at once: it probably refused the client "
            f"certificate RTT_REDIS_TLS_CERT_PATH ({cert}): expired, or not signed by a CA "
            f"the server trusts"
        )
    if not tls and _closed_at_once(text):
        return (
            f"{where} closed the connection at once: a TLS port? then use rediss:// in "
            f"RTT_REDIS_URL"
        )
    return None


def plain_port_hint(exc: BaseException, settings: Settings, url: str | None = None) -> str:
    """For a TLS client whose handshake timed out: the port may speak plain text (a plain
    Redis waits for a command and never answers a TLS hello)."""
    url = url or settings.redis_url or ""
    if urlsplit(url).scheme in TLS_SCHEMES and isinstance(exc, RedisTimeoutError):
        return "; a plain-text port? then use redis:// instead of rediss:// in RTT_REDIS_URL"
    return ""


def _closed_at_once(text: str) -> bool:
    return "Connection closed by server" in text or (
        "Connection reset by peer" in text and "reading from" in text
    )


def _ssl_reason(text: str) -> str:
    match = re.search(r"\] ([^(]+?) \(_ssl", text)
    return match[1].strip() if match else text.split(". ", 1)[-1][:200]


async def check_redis(
    redis: Redis, settings: Settings, timeout_s: float = _CONNECT_TIMEOUT_S
) -> None:
    """PING once; raise RedisRefused (one line naming the setting) on a refusal that
    waiting will not cure. A Redis that is down, slow or frozen passes (after `timeout_s`
    at most): callers wait for it as they always do."""
    try:
        async with asyncio.timeout(timeout_s):
            await redis.ping()
    except TimeoutError:
        return
    except (RedisError, OSError) as exc:
        denials: _Denials | None = getattr(redis, "denials", None)
        if denials is not None and isinstance(exc, ResponseError) and is_permission_denied(exc):
            # Which command and which user (said once: the client may have said it already).
            raise denials.report("PING", exc) from None
        message = explain_redis_error(exc, settings)
        if message is not None:
            raise RedisRefused(message) from None

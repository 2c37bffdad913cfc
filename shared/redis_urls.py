"""Redis URLs: checked before anything connects, and shown with the password masked.

A URL that redis-py cannot use fails deep inside its first command, as a traceback; checked
here it is one line naming the setting, at start.
"""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

__all__ = ["REDIS_SCHEMES", "check_redis_url", "mask_url"]

REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***`, safe to print and log (also a password
    given as a query parameter, which redis-py accepts: `?password=...`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None and "password=" not in parts.query.lower():
        return url
    if parts.password is not None:
        userinfo, _, hosts = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        parts = parts._replace(netloc=f"{user}:***@{hosts}")
    if "password=" in parts.query.lower():
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        hidden = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return parts.geturl()


def _check_hostport(hostport: str) -> str | None:
    if hostport.startswith("["):  # [IPv6]:port
        host, _, rest = hostport[1:].partition("]")
        if rest and not rest.startswith(":"):
            return f"cannot read host and port from {hostport!r}"
        port = rest[1:]
    else:
        host, _, port = hostport.partition(":")
    if not host:
        return f"no host in {hostport!r}"
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        return f"port {port!r} is not a number from 1 to 65535"
    return None


def _check_db(text: str) -> str | None:
    if text and not text.isdigit():
        return f"database {text!r} is not a number (e.g. /0)"
    return None


def _netloc_hosts(parts: SplitResult) -> str:
    return parts.netloc.rpartition("@")[2]


def check_redis_url(url: str) -> str | None:
    """What is wrong with `url`, or None when redis-py can use it."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        return str(exc)
    scheme = parts.scheme.lower()
    if scheme not in REDIS_SCHEMES:
        schemes = ", ".join(s + "://" for s in REDIS_SCHEMES)
        return f"expected a URL such as redis://host:6379/0 (schemes: {schemes})"
    if scheme == "unix":
        return None if parts.path else "no socket path (unix:///path/to/redis.sock)"
    hosts = _netloc_hosts(parts)
    if not hosts:
        return "no host (redis://host:6379/0)"
    if scheme.endswith("+sentinel"):
        for hostport in hosts.split(","):
            problem = _check_hostport(hostport)
            if problem:
                return problem
        path = parts.path.strip("/").split("/")
        if len(path) > 2:
            return f"path {parts.path!r}; expected /master or /master/db"
        return _check_db(path[1]) if len(path) == 2 else None
    problem = _check_hostport(hosts)
    if problem:
        return problem
    db = parts.path.strip("/")
    if "/" in db:
        return f"path {parts.path!r}; expected /db"
    return _check_db(db)

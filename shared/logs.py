"""structlog set-up: configured once per process, JSON lines in production.

Every line carries `timestamp` (UTC ISO 8601), `level`, `event` and `component`; request
and event context is bound through contextvars, never formatted into messages.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import msgspec
import structlog
from structlog.typing import EventDict, WrappedLogger

__all__ = ["configure_logging", "get_logger", "mask_phone"]

# Fields that may hold a caller's or callee's number.
PHONE_FIELDS: Final = frozenset({"from", "from_", "to", "phone", "caller", "callee"})
_DIGITS = re.compile(r"\d")
_LEVELS: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def mask_phone(value: str) -> str:
    """Keep the country prefix and the last 2 digits: `+15551112222` -> `+1*******22`.

    Words such as `Anonymous` or `Private` carry no number and are kept as they are.
    """
    digits = _DIGITS.findall(value)
    if len(digits) < 5:
        return value
    keep_head = 2 if value.startswith("+") else 1
    return value[:keep_head] + "*" * (len(value) - keep_head - 2) + value[-2:]


def _mask_phone_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in PHONE_FIELDS.intersection(event_dict):
        value = event_dict[key]
        if isinstance(value, str):
            event_dict[key] = mask_phone(value)
    return event_dict


def _default(obj: Any) -> Any:
    return repr(obj)


_encoder: Final = msgspec.json.Encoder(enc_hook=_default)


def _serialize(event_dict: MutableMapping[str, Any], **_: Any) -> bytes:
    # structlog passes keyword arguments to its serializer; msgspec takes none.
    try:
        return _encoder.encode(event_dict)
    except UnicodeEncodeError:
        # A byte outside UTF-8 that aiohttp kept as a surrogate: escaped as text, so a log
        # line never fails the request that writes it.
        return _encoder.encode(_escaped(event_dict))


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode()
    if isinstance(value, MutableMapping):
        return {_escaped(key): _escaped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(item) for item in value]
    return value


def configure_logging(
    *,
    component: str,
    level: str = "info",
    fmt: str = "auto",
    phone_numbers: bool = False,
    stream: Any = None,
    cache: bool = True,
) -> None:
    """Configure structlog for this process and bind `component` to every line."""
    out = stream if stream is not None else sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not phone_numbers:
        processors.append(_mask_phone_fields)
    processors += [structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info]
    if as_json:
        processors.append(structlog.processors.JSONRenderer(serializer=_serialize))
        binary: Any = out.buffer if hasattr(out, "buffer") else out
        factory: Any = structlog.BytesLoggerFactory(file=binary)
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
        factory = structlog.PrintLoggerFactory(file=out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        # Tests reconfigure per test, so they turn the cache off.
        cache_logger_on_first_use=cache,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(component=component)
    # Libraries using stdlib logging (aiohttp, redis) go to stderr at warning and above.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def get_logger(**initial: Any) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(**initial)
    return logger

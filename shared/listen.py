"""One line, naming the setting, when a server cannot listen where it was told."""

from __future__ import annotations

import errno
import socket

__all__ = ["ListenError", "check_listen", "listen_error"]


class ListenError(Exception):
    """The address or port cannot be listened on; the message names the setting."""


def listen_error(exc: OSError, host: str, port: int, port_setting: str) -> ListenError:
    """What a failed bind means, in the words of the settings that chose the address."""
    if isinstance(exc, socket.gaierror):
        return ListenError(f"cannot resolve {host!r} (RTT_HOST): {exc.strerror}")
    if exc.errno == errno.EADDRINUSE:
        return ListenError(f"port {port} on {host} is in use ({port_setting})")
    if exc.errno == errno.EACCES:
        return ListenError(f"port {port} on {host} needs privileges ({port_setting})")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(f"{host} is not an address of this machine (RTT_HOST)")
    return ListenError(f"cannot listen on {host}:{port} ({port_setting}): {exc.strerror or exc}")


def check_listen(host: str, port: int, port_setting: str) -> None:
    """Raise ListenError if a server could not listen on `host:port` now.

    Binds and closes at once (with SO_REUSEADDR, as aiohttp does), so a supervisor can
    say so before it starts anything. Port 0 (any free port) always succeeds.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
    except OSError as exc:
        raise listen_error(exc, host, port, port_setting) from None

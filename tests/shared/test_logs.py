"""Every line a program writes is one JSON object when JSON is asked for: its own lines, and
those of aiohttp, asyncio, warnings and uncaught exceptions, all through structlog."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shared.embedded import free_port
from tests.helpers import wait_for
from tests.processes import http_status, rtt_env

pytestmark = pytest.mark.slow

# Requests aiohttp's parser refuses, built byte by byte: each one logged a plain-text
# traceback (`ERROR:aiohttp.server:Error handling request`) in the middle of the JSON log.
MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: \x01\xff\r\n\r\n",  # control and non-UTF-8 bytes
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello on the plain port
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",  # NUL in the request line
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad chunk size
]


def _json_lines(text: str, where: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            raise AssertionError(f"not a JSON line on {where}: {raw!r}\n{text}") from None
        assert isinstance(line, dict), raw
        assert {"timestamp", "level", "event", "component"} <= line.keys(), raw
        lines.append(line)
    return lines


def _send_raw(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass


def test_requests_aiohttp_cannot_parse_are_logged_as_json(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **rtt_env(redis_url, "rtt", tmp_path, port=str(port))}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtt", "receiver"], env=env, stdout=stdout, stderr=stderr
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: http_status(base + "/healthz") == 200, what="receiver up")
            for payload in MALFORMED:
                _send_raw(port, payload)
            assert http_status(base + "/healthz") == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    lines = _json_lines(out.read_text(), "stdout") + _json_lines(err.read_text(), "stderr")
    from_aiohttp = [line for line in lines if line.get("logger") == "aiohttp.server"]
    assert from_aiohttp, lines
    for line in from_aiohttp:
        assert line["component"] == "receiver"
        assert line["level"] == "error"
        assert "aiohttp.http_exceptions." in line["exception"]


PROGRAM = textwrap.dedent(
    """
    import asyncio, gc, logging, threading, warnings
    from shared.logs import configure_logging

    configure_logging(component="probe", fmt="json")

    async def fail():
        raise RuntimeError("never retrieved")

    async def main():
        task = asyncio.ensure_future(fail())
        await asyncio.sleep(0.01)
        del task
        gc.collect()

    asyncio.run(main())
    warnings.warn("a library is unhappy")
    logging.getLogger("some.library").error("plain stdlib line %s", 42)
    thread = threading.Thread(target=lambda: 1 / 0)
    thread.start()
    thread.join()
    raise SystemError("uncaught at the top")
    """
)


def test_asyncio_warnings_and_uncaught_exceptions_are_json(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    lines = _json_lines(result.stdout, "stdout") + _json_lines(result.stderr, "stderr")
    by_logger = {line.get("logger"): line for line in lines}
    assert "Task exception was never retrieved" in by_logger["asyncio"]["event"]
    assert "RuntimeError: never retrieved" in by_logger["asyncio"]["exception"]
    assert "a library is unhappy" in by_logger["py.warnings"]["event"]
    assert by_logger["py.warnings"]["level"] == "warning"
    assert by_logger["some.library"]["event"] == "plain stdlib line 42"
    events = {line["event"]: line for line in lines}
    assert "ZeroDivisionError" in events["thread_exception"]["exception"]
    assert "SystemError: uncaught at the top" in events["uncaught_exception"]["exception"]
    assert all(line["component"] == "probe" for line in lines)

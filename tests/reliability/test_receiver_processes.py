"""The receiver as a process: killed with a spool, stopped with SIGTERM, run as N processes."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from shared.embedded import EmbeddedValkey, free_port
from shared.keys import Keys
from tests.bodies import sample_body
from tests.helpers import wait_for
from tests.processes import Program, http_status

pytestmark = pytest.mark.slow
JSON = {"Content-Type": "application/json"}


class Receiver:
    """`python -m receiver` on its own port, writing JSON logs to a file."""

    def __init__(self, tmp_path: Path, redis_port: int, prefix: str, **env: str) -> None:
        self.port = free_port()
        self.env = {
            "RTT_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "RTT_KEY_PREFIX": prefix,
            "RTT_PORT": str(self.port),
            "RTT_HOST": "127.0.0.1",
            "RTT_LOG_FORMAT": "json",
            "RTT_SPOOL_DIR": str(tmp_path / "spool"),
            "RTT_STORE_TIMEOUT": "300ms",
            **env,
        }
        self.tmp_path = tmp_path
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str) -> Program:
        self.runs += 1
        program = Program(["receiver", *args], self.env, self.tmp_path / f"receiver{self.runs}.log")

        def up() -> bool:
            code = program.process.poll()
            assert code is None, f"receiver exited with {code}:\n{program.text()}"
            return http_status(self.url + "/healthz") == 200

        # Starting takes a second or two; on a machine busy with other work, much longer.
        wait_for(up, 90, what="receiver up")
        return program

    def post(self, bodies: list[bytes]) -> Counter[int]:
        with ThreadPoolExecutor(8) as pool:
            return Counter(
                pool.map(
                    lambda b: http_status(self.url + "/realTimeTranscriptionEvents", b, JSON),
                    bodies,
                )
            )


@pytest.fixture
def redis_port() -> int:
    return free_port()


@pytest.fixture
def valkey(tmp_path: Path, redis_port: int) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path / "valkey", port=redis_port, appendonly=False)
    yield server
    server.stop()


def _call_ids(redis_port: int, prefix: str) -> Counter[str]:
    client = Redis(port=redis_port)
    try:
        return Counter(
            msgspec.json.decode(fields[b"body"])["callId"]
            for _, fields in client.xrange(Keys(prefix).events())
        )
    finally:
        client.close()


def _bodies(count: int) -> list[bytes]:
    return [sample_body("stopped") for _ in range(count)]


def _segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("p*/*.seg"))


def test_receiver_killed_with_a_spool_drains_it_at_the_next_start(
    tmp_path: Path, valkey: EmbeddedValkey, redis_port: int, prefix: str
) -> None:
    receiver = Receiver(tmp_path, redis_port, prefix)
    bodies = _bodies(60)
    first = receiver.start()  # Redis is not running yet: everything goes to the spool
    try:
        answered = receiver.post(bodies)
    finally:
        first.stop(signal.SIGKILL)
    segments = _segments(tmp_path)
    assert segments
    # As if the crash had cut a write short: half a record at the end of the last segment.
    with segments[-1].open("ab") as segment:
        segment.write(b"\x40\x00\x00\x00\x12\x34")
    valkey.start()
    second = receiver.start()
    try:
        on_stream = wait_for(
            lambda: (
                (found := _call_ids(redis_port, prefix)) and sum(found.values()) >= 60 and found
            ),
            what="the spool drained",
        )
        wait_for(lambda: not _segments(tmp_path), what="drained segments removed")
    finally:
        assert second.stop(signal.SIGTERM) == 0, second.text()
    print(
        f"\nreceiver SIGKILL: sent {len(bodies)}, answered 204 {answered[204]}, "
        f"on stream {sum(on_stream.values())} after the restart"
    )
    assert answered == {204: len(bodies)}
    assert [line["depth"] for line in second.named("spool_found")] == [len(bodies)]
    assert second.named("spool_record_torn")
    assert second.named("spool_drained")
    assert set(on_stream) == {msgspec.json.decode(b)["callId"] for b in bodies}
    assert set(on_stream.values()) == {1}


def test_sigterm_finishes_requests_in_flight_and_flushes_the_spool(
    tmp_path: Path, valkey: EmbeddedValkey, redis_port: int, prefix: str
) -> None:
    receiver = Receiver(tmp_path, redis_port, prefix, RTT_STORE_TIMEOUT="1s")
    valkey.start()
    program = receiver.start()
    bodies = _bodies(8)  # one per client thread: all of them in flight when SIGTERM comes
    valkey.signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            # The requests wait for the frozen Redis (1 s) while SIGTERM arrives.
            posting = pool.submit(receiver.post, bodies)
            time.sleep(0.4)
            program.send(signal.SIGTERM)
            wait_for(lambda: program.named("receiver_stopping"), what="SIGTERM taken")
            refused = http_status(receiver.url + "/healthz")
            answered = posting.result()
        code = program.wait(30)
    finally:
        valkey.signal(signal.SIGCONT)
    assert code == 0, program.text()
    assert answered == {204: len(bodies)}
    assert refused == 0  # no new connection once stopping
    # Frozen until the end, Redis could not take the spool: it is left for the next start.
    assert [line["depth"] for line in program.named("spool_left")] == [len(bodies)]
    # With Redis answering, a SIGTERM moves the spool into Redis before the exit.
    program = receiver.start()
    assert program.stop(signal.SIGTERM) == 0, program.text()
    on_stream = _call_ids(redis_port, prefix)
    print(
        f"\nreceiver SIGTERM: sent {len(bodies)}, answered 204 {answered[204]}, "
        f"on stream {sum(on_stream.values())}"
    )
    assert not _segments(tmp_path)
    assert set(on_stream) == {msgspec.json.decode(b)["callId"] for b in bodies}
    assert set(on_stream.values()) == {1}


def test_processes_share_one_port_and_a_dead_one_is_replaced(
    tmp_path: Path, valkey: EmbeddedValkey, redis_port: int, prefix: str
) -> None:
    valkey.start()
    receiver = Receiver(tmp_path, redis_port, prefix)
    program = receiver.start("--processes", "2")
    try:
        wait_for(lambda: len(program.named("receiver_listening")) == 2, what="two processes")
        listening = program.named("receiver_listening")
        assert sorted(line["process"] for line in listening) == [0, 1]
        assert {line["port"] for line in listening} == {receiver.port}
        bodies = _bodies(100)
        answered = receiver.post(bodies)
        os.kill(listening[0]["pid"], signal.SIGKILL)
        wait_for(lambda: len(program.named("receiver_listening")) == 3, what="a replacement")
        more = _bodies(50)
        answered_after = receiver.post(more)
        outcomes = _outcomes(receiver.url, "realTimeTranscriptionStopped")
    finally:
        assert program.stop(signal.SIGTERM) == 0, program.text()
    assert answered == {204: len(bodies)}
    assert answered_after == {204: len(more)}
    [replacement] = program.named("receiver_listening")[2:]
    assert replacement["process"] == listening[0]["process"]
    assert sum(_call_ids(redis_port, prefix).values()) == len(bodies) + len(more)
    # Whichever process a scrape reaches reports the sum over all of them, the dead one too:
    # each request answered 204 counted once, as stored, or spooled when Redis was slower
    # than RTT_STORE_TIMEOUT (the spool then moved it into Redis).
    assert set(outcomes) <= {"stored", "spooled"}, outcomes
    assert sum(outcomes.values()) == len(bodies) + len(more), outcomes


def _outcomes(url: str, event_type: str) -> dict[str, float]:
    """rtt_receiver_requests_total of one event type, by outcome, from one scrape."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        families = text_string_to_metric_families(resp.read().decode())
        return {
            sample.labels["outcome"]: sample.value
            for family in families
            if family.name == "rtt_receiver_requests"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels["event_type"] == event_type
        }

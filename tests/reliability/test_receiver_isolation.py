"""One bad request never harms another: a header byte outside UTF-8 among concurrent clients
(item 1), and forensic markers under a flood of bad requests (item 3).

Each scenario accounts by id, what was sent, answered and stored, and prints the ids that
differ. `make test` runs them small; `make test-reliability` at the size of the attack.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from shared.embedded import EmbeddedValkey
from shared.keys import Keys
from shared.settings import Settings
from tests.bodies import sample_body
from tests.helpers import wait_for
from tests.processes import http_status
from tests.receiver.helpers import RawAnswer, live_receiver, raw_post
from tests.reliability.sizes import size
from tests.reliability.test_receiver_processes import Receiver

pytestmark = pytest.mark.slow
JSON = (b"Content-Type", b"application/json")


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey(tmp_path / "valkey", appendonly=False) as server:
        yield server


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _post_all(
    url: str, requests: list[tuple[bytes, list[tuple[bytes, bytes]]]], clients: int
) -> list[RawAnswer | None]:
    """Each request once, `clients` at a time; None: no answer within Bandwidth's 15 s."""
    gate = asyncio.Semaphore(clients)

    async def one(body: bytes, headers: list[tuple[bytes, bytes]]) -> RawAnswer | None:
        async with gate:
            try:
                return await raw_post(url, body, headers)
            except (TimeoutError, OSError):
                return None

    return await asyncio.gather(*(one(body, headers) for body, headers in requests))


async def test_header_byte_outside_utf8_among_20_clients_fails_no_one(
    tmp_path: Path, valkey: EmbeddedValkey, prefix: str
) -> None:
    count = size(400, 5000)
    bad_every = 3  # a third of them: thousands in the long run, all co-batched with others
    receiver = Receiver(tmp_path, valkey.port, prefix, RTT_STORE_TIMEOUT="2s")
    program = receiver.start()
    url = receiver.url + "/realTimeTranscriptionEvents"
    bodies = [sample_body("stopped") for _ in range(count)]
    ids = [msgspec.json.decode(body)["callId"] for body in bodies]
    requests = [
        (body, [JSON, (b"X-Request-Id", b"bw-\xff-%d" % n if n % bad_every == 0 else b"ok-%d" % n)])
        for n, body in enumerate(bodies)
    ]
    try:
        warm = await _post_all(url, [(sample_body("started"), [JSON]) for _ in range(200)], 20)
        assert all(answer is not None and answer.status == 204 for answer in warm)
        rss_before = _rss_mb(program.process.pid)
        answers = await _post_all(url, requests, clients=20)
        rss_after = _rss_mb(program.process.pid)
    finally:
        assert program.stop() == 0, program.text()
    client = Redis(port=valkey.port)
    try:
        stored = Counter(
            msgspec.json.decode(fields[b"body"])["callId"]
            for _, fields in await client.xrange(Keys(prefix).events())
            if msgspec.json.decode(fields[b"body"])["eventType"] != "realTimeTranscriptionStarted"
        )
    finally:
        await client.aclose()
    answered = {ids[n] for n, answer in enumerate(answers) if answer and answer.status == 204}
    statuses = Counter(answer.status if answer else "none" for answer in answers)
    print(
        f"\nsent {count} ({count // bad_every + 1} with X-Request-Id byte 0xff) from 20 clients: "
        f"answered {dict(statuses)}, stored {sum(stored.values())}; "
        f"receiver RSS {rss_before:.0f} -> {rss_after:.0f} MB"
    )
    print(f"not answered 204: {sorted(set(ids) - answered)[:20]}")
    print(f"not stored: {sorted(set(ids) - set(stored))[:20]}")
    print(f"stored twice: {sorted(i for i, n in stored.items() if n > 1)[:20]}")
    assert statuses == {204: count}
    assert set(stored) == set(ids)
    assert set(stored.values()) == {1}
    # Every request was answered, so nothing of them is held: memory does not grow with them.
    assert rss_after - rss_before < 40


async def test_forensic_markers_stay_bounded_under_a_flood_of_bad_requests(
    make_settings: Callable[..., Settings], redis: Redis, prefix: str
) -> None:
    count, max_len = size(2000, 20_000), size(200, 1000)
    rng = random.Random(12)
    bad = [b'{"eventType": "realTimeTranscriptionStopped", "n": %d' % n for n in range(count)]
    unknown = [
        sample_body("stopped", rng=rng, eventType="realTimeTranscriptionPaused")
        for _ in range(count // 4)
    ]
    async with live_receiver(make_settings(forensic_max_len=max_len)) as receiver:
        requests = [(body, [JSON, (b"X-Request-Id", b"bad-%d" % n)]) for n, body in enumerate(bad)]
        requests += [(body, [JSON]) for body in unknown]
        answers = await _post_all(receiver.events_url, requests, clients=20)
    keys = Keys(prefix)
    found = [key.decode() async for key in redis.scan_iter(f"{prefix}:*", count=1000)]
    markers = {keys.forensic_markers(keys.rejected), keys.forensic_markers(keys.unknown)}
    kept = [fields[b"request_id"] for _, fields in await redis.xrange(keys.rejected)]
    sizes = {key: await redis.zcard(key) for key in markers & set(found)}
    refused = {
        b"bad-%d" % n for n, answer in enumerate(answers[:count]) if answer and answer.status == 400
    }
    print(
        f"\n{count} bad requests answered 400: {len(refused)}, {len(unknown)} unknown bodies; "
        f"keys under the prefix {len(found)}, markers {sizes}, rtt:rejected holds {len(kept)}"
    )
    print(f"kept on rtt:rejected without a 400: {sorted(set(kept) - refused)[:20]}")
    assert len(refused) == count
    assert sorted(found) == sorted({keys.rejected, keys.unknown} | markers)
    assert set(sizes.values()) == {max_len}
    # MAXLEN ~ trims whole nodes: about the bound, and only the newest survive.
    assert max_len <= len(kept) < 2 * max_len
    assert set(kept) <= refused
    assert len(set(kept)) == len(kept)


def test_a_second_receiver_on_the_same_spool_is_not_ready_until_the_first_is_gone(
    tmp_path: Path, valkey: EmbeddedValkey, prefix: str
) -> None:
    # One RTT_SPOOL_DIR for both, as replicas sharing a volume would have.
    spool = str(tmp_path / "spool")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Receiver(tmp_path / "a", valkey.port, prefix, RTT_SPOOL_DIR=spool)
    second = Receiver(tmp_path / "b", valkey.port, prefix, RTT_SPOOL_DIR=spool)
    one = first.start()
    two = second.start()
    try:
        ready = http_status(first.url + "/readyz"), http_status(second.url + "/readyz")
        bodies = [sample_body("stopped") for _ in range(50)]
        valkey.kill()  # Redis goes: the first spools, the second has nowhere to keep events
        to_first, to_second = first.post(bodies), second.post([sample_body("stopped")])
        valkey.start()
        assert one.stop() == 0, one.text()
        # The first gone, the second takes the spool, drains what the first left, is ready.
        wait_for(lambda: http_status(second.url + "/readyz") == 200, what="second ready")
        on_stream = wait_for(
            lambda: len(found := _call_ids(valkey.port, prefix)) >= 50 and found,
            what="the first one's spool on the stream",
        )
    finally:
        assert two.stop() == 0, two.text()
    ids = {msgspec.json.decode(body)["callId"] for body in bodies}
    print(
        f"\nreadyz first {ready[0]}, second {ready[1]}; Redis killed: first answered "
        f"{dict(to_first)} of 50, second {dict(to_second)}; on the stream {len(on_stream)}"
    )
    print(f"answered 204 and not stored: {sorted(ids - set(on_stream))[:20]}")
    assert ready == (200, 503)
    assert next(line["error"] for line in two.named("spool_unusable")).endswith(
        "is used by another process"
    )
    assert to_first == {204: 50}
    assert to_second == {503: 1}
    assert set(on_stream) == ids
    assert set(on_stream.values()) == {1}


def _call_ids(port: int, prefix: str) -> Counter[str]:
    from redis import Redis as SyncRedis

    client = SyncRedis(port=port)
    try:
        return Counter(
            msgspec.json.decode(fields[b"body"])["callId"]
            for _, fields in client.xrange(Keys(prefix).events())
        )
    except OSError:
        return Counter()
    finally:
        client.close()

"""Byte-level fuzzing of the decoder and of the live receiver: never a 5xx, never a hang,
every 400 names its cause, and every answer is accounted for on the streams by request id.

`make test` runs a few hundred cases of each; `make test-reliability` sets RTT_FUZZ_CASES
(100,000). RTT_FUZZ_SEED reproduces a live run; its seed is printed.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from shared.events import DecodeFailure, decode_event
from shared.keys import Keys
from shared.settings import Settings
from tests.receiver.helpers import metric, raw_post
from tests.reliability.fuzz import CREDENTIALS, FuzzCase, fuzz_body, fuzz_case, fuzz_cases_count
from tests.reliability.test_receiver_processes import Receiver

pytestmark = pytest.mark.slow

# Hypothesis (which shrinks what it finds) runs up to 10,000 examples; the seeded run does
# the full count.
DECODER_CASES = min(fuzz_cases_count(400), 10_000)
LIVE_CASES = fuzz_cases_count(400)
ANSWERS = {204, 400, 401, 403, 408, 413, 415}
FUZZ = settings(
    max_examples=DECODER_CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check_decoded(body: bytes) -> None:
    result = decode_event(body)  # raising is the failure
    if isinstance(result, DecodeFailure):
        assert result.error
        assert result.path.startswith("$")


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_decoder_names_the_fault_of_every_mutated_body(rng: random.Random) -> None:
    _check_decoded(fuzz_body(rng))


@FUZZ
@given(body=st.binary(max_size=4096))
def test_decoder_names_the_fault_of_any_bytes(body: bytes) -> None:
    _check_decoded(body)


def test_decoder_seeded_run(capsys: pytest.CaptureFixture[str]) -> None:
    """The long run without hypothesis's overhead: RTT_FUZZ_CASES bodies from one seed."""
    seed = int(os.environ.get("RTT_FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    for _ in range(fuzz_cases_count(2000)):
        body = fuzz_body(rng) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 4096))
        result = decode_event(body)
        if isinstance(result, DecodeFailure):
            assert result.error
            assert result.path.startswith("$")
        outcomes[type(result).__name__] += 1
    with capsys.disabled():
        print(f"\ndecoder, RTT_FUZZ_SEED={seed}: {dict(outcomes)}")


async def _request_ids(redis: Redis, stream: str) -> set[bytes]:
    """The request ids on a stream, read a page at a time (it may hold 100,000 entries)."""
    found: set[bytes] = set()
    start = "-"
    while page := await redis.xrange(stream, min=start, count=2000):
        found.update(fields[b"request_id"] for _, fields in page)
        start = "(" + page[-1][0].decode()
    return found


def _expected(case: FuzzCase, max_body: int) -> int:
    if len(case.body) > max_body:
        return 413
    return 400 if isinstance(decode_event(case.body), DecodeFailure) else 204


async def test_live_receiver_answers_every_fuzzed_request(
    make_settings: Callable[..., Settings],
    redis: Redis,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("RTT_FUZZ_SEED", random.randrange(2**32)))
    print(f"\nRTT_FUZZ_SEED={seed} RTT_FUZZ_CASES={LIVE_CASES}")
    rng = random.Random(seed)
    # The receiver in a process of its own, as deployed: the client does not share its core.
    receiver = Receiver(
        tmp_path,
        int(redis_url.rsplit(":", 1)[1].split("/")[0]),
        prefix,
        RTT_BASIC_AUTH=CREDENTIALS,
        RTT_TRUSTED_PROXIES="127.0.0.0/8",
        RTT_ALLOW_CIDRS="0.0.0.0/0,::/0",
        RTT_READ_TIMEOUT="2s",
        RTT_LOG_LEVEL="error",
        RTT_FORENSIC_MAX_LEN=str(LIVE_CASES + 1000),
    )
    max_body = make_settings().max_body_size
    url = receiver.url + "/realTimeTranscriptionEvents"
    answers: dict[int, tuple[int, bytes, bytes, bytes]] = {}
    cases: dict[int, FuzzCase] = {}
    gate = asyncio.Semaphore(16)

    async def send(case: FuzzCase) -> None:
        async with gate:
            try:
                answer = await raw_post(url, case.body, case.headers)
            except TimeoutError:
                answers[case.index] = (-1, b"", b"", b"")  # a hang
                return
            except OSError:
                answers[case.index] = (0, b"", b"", b"")
                return
        answers[case.index] = (
            answer.status,
            answer.headers.get(b"x-request-id", b""),
            answer.headers.get(b"content-type", b""),
            answer.body,
        )

    program = receiver.start()
    try:
        for start in range(0, LIVE_CASES, 2000):
            # Only what is still needed is kept: the oracle's verdict, not the body.
            chunk = [fuzz_case(rng, n) for n in range(start, min(start + 2000, LIVE_CASES))]
            await asyncio.gather(*(send(case) for case in chunk))
            for case in chunk:
                case.expected = _expected(case, max_body) if case.plain else 0
                case.body = b""
                cases[case.index] = case
        dedup_hits = await metric(receiver.url, "rtt_receiver_dedup_hits_total")
    finally:
        assert program.stop() == 0, program.text()
    statuses = Counter(status for status, *_ in answers.values())
    print(f"sent {LIVE_CASES}, answered {len(answers)}: {dict(sorted(statuses.items()))}")
    wrong = sorted(n for n, (status, *_) in answers.items() if status not in ANSWERS)
    unnamed: list[int] = []
    rejected_ids: set[bytes] = set()
    accepted_ids: set[bytes] = set()
    for n, (status, request_id, content_type, body) in answers.items():
        if status == 400 and content_type.startswith(b"application/json"):
            fault = msgspec.json.decode(body)
            if not (fault.get("error") and str(fault.get("path", "")).startswith("$")):
                unnamed.append(n)
            rejected_ids.add(request_id)
        elif status == 400 and not body.strip():
            unnamed.append(n)  # aiohttp's own 400 (a malformed head) says why in its body
        elif status == 204:
            accepted_ids.add(request_id)
    mismatched = sorted(
        n for n, case in cases.items() if case.plain and answers[n][0] != case.expected
    )
    keys = Keys(prefix)
    kept = await _request_ids(redis, keys.rejected)
    stored: set[bytes] = set()
    for stream in (*keys.event_streams(), keys.unknown):
        stored |= await _request_ids(redis, stream)
    print(
        f"400s with a JSON cause {len(rejected_ids)}, kept on rtt:rejected {len(kept)}; "
        f"204s {len(accepted_ids)}, stored {len(stored)}, repeats {dedup_hits:.0f}"
    )
    print(f"not 2xx/4xx or no answer: {wrong[:50]}")
    for n in wrong[:10]:
        print(f"  case {n}: {answers[n][0]} {answers[n][3][:200]!r} after {cases[n].headers}")
    print(f"400 without a cause: {unnamed[:50]}")
    print(f"answer not what decode_event says: {mismatched[:50]}")
    for n in mismatched[:5]:
        print(f"  case {n}: {answers[n][0]} {answers[n][3][:200]!r}, not {cases[n].expected}")
    print(
        f"400 not kept: {sorted(rejected_ids - kept)[:20]}, kept without a 400: "
        f"{sorted(kept - rejected_ids)[:20]}"
    )
    print(
        f"204 neither stored nor a repeat: {len(accepted_ids) - len(stored) - dedup_hits:.0f}; "
        f"stored without a 204: {sorted(stored - accepted_ids)[:20]}"
    )
    assert len(answers) == LIVE_CASES
    assert not wrong
    assert not unnamed
    assert not mismatched
    assert kept == rejected_ids
    assert stored <= accepted_ids
    assert len(accepted_ids) == len(stored) + dedup_hits

"""Byte-level bad input for the decoder and the live receiver: bodies, and request heads.

Every generator takes a `random.Random`, so a run is reproduced from its seed; the same
generators feed hypothesis (through `st.randoms()`) and the long seeded runs.
"""

from __future__ import annotations

import base64
import os
import random
from dataclasses import dataclass, field

import msgspec

from tests.bodies import SEED_EXAMPLES, sample_body, sample_event

__all__ = ["CREDENTIALS", "FuzzCase", "fuzz_body", "fuzz_case", "fuzz_cases_count"]

CREDENTIALS = "bandwidth:s3cret"
_AUTH = b"Basic " + base64.b64encode(CREDENTIALS.encode())


def fuzz_cases_count(fast: int) -> int:
    """`RTT_FUZZ_CASES` (100,000 under `make test-reliability`), else the fast count."""
    return int(os.environ.get("RTT_FUZZ_CASES", fast))


def _seeds() -> list[bytes]:
    seeds = list(SEED_EXAMPLES)
    for kind in ("started", "stopped", "rejected", "available"):
        seeds.append(sample_body(kind))
    seeds.append(sample_body("stopped", eventType="realtimeTranscriptionStopped"))
    seeds.append(sample_body("stopped", eventType="realTimeTranscriptionPaused"))
    seeds.append(msgspec.json.encode(sample_event("rejected", object_key="transcription")))
    return seeds


SEEDS = _seeds()
# What broke decoders before: not JSON, out of range, invalid UTF-8, lone surrogates.
TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"-0",
    b"1e999",
    b"-1e999",
    b"1" + b"0" * 400,
    b"0.0000000000000000000000000001e-400",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b'"\\ud800"',
    b'"\\udcff\\u0000"',
    b"\x00",
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b'""',
    b"{}",
    b"[]",
    b'"realtimeTranscriptionStopped"',
    b'"realTimeTranscriptionPaused"',
    b'"eventType"',
]


def _nested(rng: random.Random) -> bytes:
    depth = rng.choice([10, 100, 500, 1000, 2000, 5000])
    if rng.random() < 0.5:
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        at = rng.randint(0, len(data))
        if op == 0 and data:  # flip a byte
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op == 1:  # insert a token
            data[at:at] = rng.choice(TOKENS)
        elif op == 2:  # delete a range
            del data[at : at + rng.randint(1, 40)]
        elif op == 3:  # truncate
            del data[at:]
        elif op == 4:  # a value replaced by a token, after some `": `
            colon = data.find(b": ", at)
            if colon < 0:
                colon = data.find(b":", at)
            if colon >= 0:
                end = colon + 1 + rng.randint(0, 30)
                data[colon + 1 : end] = b" " + rng.choice(TOKENS)
        elif op == 5:  # a deep value under a field the decoder ignores
            data[at:at] = b'"ignored": ' + _nested(rng) + b", "
        else:  # random bytes
            data[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(data)


def fuzz_body(rng: random.Random) -> bytes:
    """A body: random bytes, a mutated valid event, deep nesting, or a huge number."""
    kind = rng.random()
    if kind < 0.15:
        return rng.randbytes(rng.randint(0, 2048))
    if kind < 0.2:
        return _nested(rng)
    if kind < 0.4:
        return sample_body(rng.choice(["started", "stopped", "rejected", "available"]), rng=rng)
    if kind < 0.45:
        event = sample_event("stopped", rng=rng)
        event[rng.choice(["callId", "cause", "extra", "eventTime"])] = msgspec.Raw(
            rng.choice(TOKENS[:8])
        )
        return msgspec.json.encode(event)
    return _mutate(rng, rng.choice(SEEDS))


def _header_bytes(rng: random.Random, size: int, case: FuzzCase) -> bytes:
    if rng.random() < 0.2:
        # Any byte but CR and LF, which would end the header line: aiohttp's parser
        # refuses controls with a 400 of its own, before the receiver sees the request.
        case.plain = False
        return bytes(b for b in rng.randbytes(size) if b not in (10, 13))
    # What passes aiohttp's parser and reaches the receiver: printable bytes, and bytes
    # outside ASCII that it keeps as surrogates.
    return bytes(rng.choice(_HEADER_BYTES) for _ in range(size))


_HEADER_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])


@dataclass
class FuzzCase:
    """One request: its body and every header the receiver reads, maybe mangled."""

    index: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Only the body is fuzzed: the answer must be what decode_event says.
    plain: bool = True
    expected: int = 0


def fuzz_case(rng: random.Random, index: int) -> FuzzCase:
    body = fuzz_body(rng)
    case = FuzzCase(index, body)
    request_id = b"case-%d" % index
    if rng.random() < 0.3:
        request_id += _header_bytes(rng, rng.randint(1, 40), case)
    headers = [(b"X-Request-Id", request_id)]
    roll = rng.random()
    if roll < 0.08:
        case.plain = False
        headers.append(
            (
                b"Authorization",
                rng.choice([b"Basic ", b"basic ", b""])
                + _header_bytes(rng, rng.randint(0, 60), case),
            )
        )
    else:
        headers.append((b"Authorization", _AUTH))
    if rng.random() < 0.08:
        case.plain = False
        headers.append((b"Content-Type", _header_bytes(rng, rng.randint(0, 40), case)))
    else:
        headers.append(
            (b"Content-Type", rng.choice([b"application/json", b"application/json; charset=utf-8"]))
        )
    roll = rng.random()
    if roll < 0.06:
        case.plain = False
        headers.append((b"X-Forwarded-For", _header_bytes(rng, rng.randint(0, 60), case)))
    elif roll < 0.12:
        case.plain = False
        hops = rng.choice(
            [b"203.0.113.9", b"2001:db8::1, 127.0.0.1", b"::ffff:10.1.2.3", b"999.1.1.1"]
        )
        headers.append((b"X-Forwarded-For", hops))
    if rng.random() < 0.05:
        case.plain = False
        size = len(body)
        lengths = [b"%d" % (size + 7), b"%d" % max(size - 1, 0), b"-1", b"abc", b"1e3", b" "]
        headers.append((b"Content-Length", rng.choice(lengths)))
        if rng.random() < 0.3:
            headers.append((b"Content-Length", b"%d" % size))
    case.headers = headers
    return case

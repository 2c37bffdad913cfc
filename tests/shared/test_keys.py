"""The key layout: a call always lands on one shard, and guards share their stream's slot."""

from __future__ import annotations

import pytest
from redis.cluster import key_slot

from shared.keys import Keys


@pytest.mark.parametrize("shards", [1, 4])
def test_dedup_key_shares_the_slot_of_its_stream(shards: int) -> None:
    keys = Keys("rtt", shards)
    for shard in range(shards):
        stream = keys.events(shard)
        assert key_slot(keys.dedup(shard, "x:c-1:t-1").encode()) == key_slot(stream.encode())


def test_unsharded_layout_matches_the_contract() -> None:
    keys = Keys()
    assert keys.event_streams() == ["rtt:events"]
    assert keys.events(keys.shard_of("c-anything")) == "rtt:events"
    assert (keys.dlq, keys.rejected, keys.unknown) == ("rtt:dlq", "rtt:rejected", "rtt:unknown")


def test_shards_spread_calls_and_keep_each_call_on_one_stream() -> None:
    keys = Keys("rtt", 4)
    assert keys.event_streams() == [f"rtt:events:{{{n}}}" for n in range(4)]
    streams = {keys.events(keys.shard_of(f"c-{n}")) for n in range(200)}
    assert streams == set(keys.event_streams())
    assert {keys.events(keys.shard_of("c-7")) for _ in range(10)} == {
        keys.events(keys.shard_of("c-7"))
    }
    # Distinct slots, so a Redis Cluster can put shards on different nodes.
    assert len({key_slot(s.encode()) for s in keys.event_streams()}) == 4


def test_shard_of_is_stable_across_processes() -> None:
    # crc32, not hash(): Python randomises str hashes per process.
    assert Keys("rtt", 8).shard_of("c-95ac912f-68aacdd7-4a8e-4223-a7fd-020e02fa6bf2") == 5

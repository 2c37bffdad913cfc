"""The Redis key layout: the one place that knows every key and its hash tag.

Sharded event streams carry a hash tag (`{n}`) so shards land on different Redis Cluster
slots; every key that guards a stream (dedup) shares its slot, so a script touching both
stays on one node.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "rtt"
    shards: int = 1

    def shard_of(self, call_id: str) -> int:
        """Stable across processes and restarts (unlike `hash()`), so a call stays on one shard."""
        return zlib.crc32(call_id.encode()) % self.shards if self.shards > 1 else 0

    def events(self, shard: int = 0) -> str:
        if self.shards > 1:
            return f"{self.prefix}:events:{{{shard}}}"
        return f"{self.prefix}:events"

    def event_streams(self) -> list[str]:
        return [self.events(n) for n in range(self.shards)]

    def stream_for_call(self, call_id: str) -> str:
        return self.events(self.shard_of(call_id))

    def shard_of_stream(self, stream: str) -> int:
        for n in range(self.shards):
            if self.events(n) == stream:
                return n
        raise ValueError(f"not an event stream of this layout: {stream}")

    def dedup(self, shard: int, identity: str) -> str:
        """Marks a delivery as stored; lives in its stream's slot."""
        if self.shards > 1:
            return f"{self.prefix}:dedup:{{{shard}}}:{identity}"
        # The unsharded stream key has no braces, so Redis hashes the whole key: the same
        # name used as a hash tag puts this key in the stream's slot.
        return f"{self.prefix}:dedup:{{{self.events()}}}:{identity}"

    def forensic_dedup(self, stream: str, identity: str) -> str:
        """Marks an entry of `rtt:rejected` or `rtt:unknown` as stored; in that stream's slot."""
        return f"{self.prefix}:dedup:{{{stream}}}:{identity}"

    def alert_once(self, sink: str, alert_key: str) -> str:
        return f"{self.prefix}:alerted:{sink}:{alert_key}"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}:dlq"

    @property
    def rejected(self) -> str:
        return f"{self.prefix}:rejected"

    @property
    def unknown(self) -> str:
        return f"{self.prefix}:unknown"

    @property
    def silences(self) -> str:
        return f"{self.prefix}:silences"

    def heartbeat(self, group: str, worker_id: str) -> str:
        return f"{self.prefix}:alive:{group}:{worker_id}"

    def alert_group(self, group_key: str) -> str:
        return f"{self.prefix}:alertgroup:{group_key}"

    def rate_window(self) -> str:
        return f"{self.prefix}:rate"

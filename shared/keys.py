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

    def dedup(self, shard: int, identity: str) -> str:
        """Marks a delivery as stored; lives in its stream's slot."""
        return self.dedup_prefix(shard) + identity

    def dedup_prefix(self, shard: int) -> str:
        """What every dedup key of a shard starts with (the receiver resolves it once)."""
        if self.shards > 1:
            return f"{self.prefix}:dedup:{{{shard}}}:"
        # The unsharded stream key has no braces, so Redis hashes the whole key: the same
        # name used as a hash tag puts this key in the stream's slot.
        return f"{self.prefix}:dedup:{{{self.events()}}}:"

    def forensic_markers(self, stream: str) -> str:
        """The markers of `rtt:rejected` or `rtt:unknown` entries: one sorted set per stream,
        cut to the stream's length; in that stream's slot."""
        return f"{self.prefix}:dedup:{{{stream}}}"

    def alert_once(self, sink: str, alert_key: str) -> str:
        """Marks an alert as sent to a sink; shares a slot with its sending lock."""
        return f"{self.alert_once_head}{sink}:{alert_key}}}"

    @property
    def alert_once_head(self) -> str:
        """What `alert_once` keys start with: a script builds them as head, `sink:key`, `}`."""
        return f"{self.prefix}:alerted:{{"

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

    def alert_sending(self, sink: str, alert_key: str) -> str:
        """Short-lived lock: one replica at a time sends a given alert to a given sink."""
        return f"{self.alert_sending_head}{sink}:{alert_key}}}"

    @property
    def alert_sending_head(self) -> str:
        """What `alert_sending` keys start with (see `alert_once_head`)."""
        return f"{self.prefix}:alerting:{{"

    @property
    def _alerts(self) -> str:
        # One hash tag for all alert state, so each alert script runs on one cluster node.
        return f"{self.prefix}:{{{self.prefix}:alerts}}"

    def alert_seen(self, alert_key: str) -> str:
        """How an alert was taken into its group (first or grouped): counted once."""
        return f"{self._alerts}:seen:{alert_key}"

    def alert_group(self, group_key: str) -> str:
        return f"{self._alerts}:group:{group_key}"

    def alert_group_examples(self, group_key: str) -> str:
        return f"{self._alerts}:group:{group_key}:examples"

    @property
    def alert_groups_due(self) -> str:
        """Open group windows by the time their summary is due (a sorted set)."""
        return f"{self._alerts}:due"

    @property
    def alert_outbox(self) -> str:
        """Summaries and rate changes waiting for delivery, in order (a stream)."""
        return f"{self._alerts}:outbox"

    @property
    def alert_cursors(self) -> str:
        """Per sink, the last outbox entry delivered."""
        return f"{self._alerts}:cursors"

    @property
    def alert_leader(self) -> str:
        return f"{self._alerts}:leader"

    def alert_pace(self, sink: str) -> str:
        """When a sink may next be called (pacing and 429 Retry-After, for every worker)."""
        return f"{self._alerts}:pace:{sink}"

    def rate_window(self) -> str:
        """Stops in the rate rule's sliding window (a sorted set by time)."""
        return f"{self._alerts}:rate:stops"

    @property
    def rate_failures(self) -> str:
        return f"{self._alerts}:rate:failed"

    @property
    def rate_state(self) -> str:
        return f"{self._alerts}:rate:state"

    # Stale transcriptions: all in the alerts' slot, so each script stays on one node.
    def alert_open(self, transcription_id: str) -> str:
        """A Started still waiting for its Stopped or Rejected (its stale alert, ready)."""
        return f"{self._alerts}:open:{transcription_id}"

    @property
    def alert_open_due(self) -> str:
        """Open transcriptions by the time they become stale (a sorted set)."""
        return f"{self._alerts}:open:due"

    def alert_closed(self, transcription_id: str) -> str:
        """A Stopped or Rejected was seen: a Started that comes later opens nothing."""
        return f"{self._alerts}:closed:{transcription_id}"

    def alert_stale(self, transcription_id: str) -> str:
        """The stale alert raised for a transcription, or `resolved` once it has been."""
        return f"{self._alerts}:stale:{transcription_id}"

    @property
    def quiet_state(self) -> str:
        """Whether the whole feed is quiet (firing), its incident count, when it was seen."""
        return f"{self._alerts}:quiet"

    @property
    def silence_hits(self) -> str:
        return f"{self.prefix}:silences:hits"

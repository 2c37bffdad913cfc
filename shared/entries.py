"""The stream entry codec: what one accepted event looks like on `rtt:events`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Fields", "StreamEntry", "entry_fields"]

# What XADD takes; redis-py types its arguments as this union.
FieldValue = bytes | bytearray | memoryview | str | int | float
Fields = dict[FieldValue, FieldValue]


def entry_fields(
    type: str, body: bytes, received_at_ms: int, request_id: str, traceparent: str = ""
) -> Fields:
    """The fields of a new entry; the receiver builds one per request, without an object."""
    fields: Fields = {
        "type": type,
        "body": body,
        "received_at": received_at_ms,
        "request_id": request_id,
    }
    if traceparent:
        fields["traceparent"] = traceparent
    return fields


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """Fields `type`, `body` (the raw JSON, byte for byte), `received_at` (ms), `request_id`,
    and `traceparent` when tracing is on.

    `group` is set only on an entry re-driven from the dead-letter queue: it names the one
    consumer group that should handle it; every other group acknowledges it unseen.
    """

    type: str
    body: bytes
    received_at_ms: int
    request_id: str
    group: str | None = None
    # The receiver's span, W3C `traceparent`, when tracing is on (shared.tracing).
    traceparent: str = ""

    def to_fields(self) -> Fields:
        fields = entry_fields(self.type, self.body, self.received_at_ms, self.request_id)
        if self.group is not None:
            fields["group"] = self.group
        if self.traceparent:
            fields["traceparent"] = self.traceparent
        return fields

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> StreamEntry:
        return cls(
            type=fields[b"type"].decode(),
            body=fields[b"body"],
            received_at_ms=int(fields.get(b"received_at", b"0")),
            request_id=fields.get(b"request_id", b"").decode(),
            group=fields[b"group"].decode() if b"group" in fields else None,
            traceparent=fields.get(b"traceparent", b"").decode(),
        )

"""The dead-letter stream: letters round-trip, and the per-group count stays right as
letters come and go."""

from __future__ import annotations

from redis.asyncio import Redis

from shared.entries import StreamEntry
from shared.keys import Keys
from shared.settings import Settings
from worker.dlq import DeadLetter, DlqDepth, dead_letter, delete, read_all


def _letter(group: str, n: int) -> DeadLetter:
    # Its stream and group do not exist: the acknowledgement that goes with it is a no-op.
    return DeadLetter(
        stream="no-such-stream",
        original_id=f"1-{n}",
        group=group,
        worker_id="w",
        error="boom",
        attempts=5,
        entry=StreamEntry("realTimeTranscriptionStopped", b"{}", n, f"r{n}"),
        failed_at_ms=n,
    )


async def test_depth_per_group_follows_additions_and_removals(
    settings: Settings, redis: Redis
) -> None:
    dlq = Keys(settings.key_prefix).dlq
    depth = DlqDepth(dlq)
    assert await depth.refresh(redis) == {}
    for n, group in enumerate(["a", "a", "b"]):
        await dead_letter(redis, dlq, _letter(group, n), max_len=100)
    assert await depth.refresh(redis) == {"a": 2, "b": 1}
    letters = await read_all(redis, dlq)
    assert [(x.group, x.original_id, x.attempts) for x in letters] == [
        ("a", "1-0", 5),
        ("a", "1-1", 5),
        ("b", "1-2", 5),
    ]
    await delete(redis, dlq, [letters[1]])  # an "a" goes, a "b" comes: same length
    await dead_letter(redis, dlq, _letter("b", 3), max_len=100)
    assert await depth.refresh(redis) == {"a": 1, "b": 2}
    assert await depth.refresh(redis) == {"a": 1, "b": 2}

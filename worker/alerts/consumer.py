"""The built-in `alerts` consumer."""

from __future__ import annotations

import msgspec

from shared.events import Event, Rejected, Stopped
from worker.consumers import Context, consumer

from .rules import alert_for

__all__ = ["alerts_consumer"]


@consumer("alerts", events=[Stopped, Rejected])
async def alerts_consumer(event: Event, ctx: Context) -> None:
    alert = alert_for(event, ctx.settings)
    if alert is None:
        return
    fields = msgspec.structs.asdict(alert)
    if alert.severity == "error":
        ctx.log.error("transcription_alert", **fields)
    else:
        ctx.log.warning("transcription_alert", **fields)

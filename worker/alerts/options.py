"""What the alerts consumer is configured with: its share of the settings, taken in one place.

The alerts modules read these options, never the whole `Settings`; `from_settings` is the
one place that takes them from the settings (`RTT_ALERT_*`, and the few worker settings
the alerts share), each from the setting of its name.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import msgspec

from shared.replicas import Wait, wait_of
from shared.settings import Settings

__all__ = ["AlertOptions"]


class AlertOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Each field is the setting of the same name with `alert_` dropped, except where said."""

    key_prefix: str  # RTT_KEY_PREFIX: starts the rate and quiet incidents' dedup keys
    causes: tuple[str, ...]
    warning_causes: tuple[str, ...]
    webhook_url: str | None
    slack_webhook_url: str | None
    pagerduty_routing_key: str | None
    pagerduty_url: str
    alertmanager_url: str | None
    alertmanager_resolve_after: timedelta
    alertmanager_resend: timedelta
    sink_timeout: timedelta
    sink_retries: int
    group_by: tuple[str, ...]
    group_interval: timedelta
    repeat_interval: timedelta
    once_ttl: timedelta
    rate_threshold: float
    rate_min_stops: int
    rate_window: timedelta
    stale_after: timedelta
    quiet_after: timedelta
    heartbeat_ttl: timedelta  # RTT_HEARTBEAT_TTL: a sender's lock and the upkeep lease
    retry_base: timedelta  # RTT_RETRY_BASE, RTT_RETRY_MAX: the outbox's retry delays
    retry_max: timedelta
    replicas: Wait | None  # RTT_STORE_REPLICAS(_TIMEOUT): the WAIT after once-records

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertOptions:
        values = {
            name: getattr(settings, name if name in _WORKER_SETTINGS else f"alert_{name}")
            for name in cls.__struct_fields__
            if name != "replicas"
        }
        # convert: the settings' lists become the options' tuples.
        return msgspec.convert({**values, "replicas": wait_of(settings)}, cls)


# The worker settings the alerts share keep their names; every other option is the
# setting of its name with `alert_` before it.
_WORKER_SETTINGS: Final = frozenset({"key_prefix", "heartbeat_ttl", "retry_base", "retry_max"})

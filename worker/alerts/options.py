"""What the alerts consumer is configured with: its share of the settings, taken in one place.

The alerts modules read these options, never the whole `Settings`; `from_settings` is the
one place that knows which setting (`RTT_ALERT_*`, and the few worker settings the alerts
share) becomes which option.
"""

from __future__ import annotations

from datetime import timedelta

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
        return cls(
            key_prefix=settings.key_prefix,
            causes=tuple(settings.alert_causes),
            warning_causes=tuple(settings.alert_warning_causes),
            webhook_url=settings.alert_webhook_url,
            slack_webhook_url=settings.alert_slack_webhook_url,
            pagerduty_routing_key=settings.alert_pagerduty_routing_key,
            pagerduty_url=settings.alert_pagerduty_url,
            alertmanager_url=settings.alert_alertmanager_url,
            alertmanager_resolve_after=settings.alert_alertmanager_resolve_after,
            alertmanager_resend=settings.alert_alertmanager_resend,
            sink_timeout=settings.alert_sink_timeout,
            sink_retries=settings.alert_sink_retries,
            group_by=tuple(settings.alert_group_by),
            group_interval=settings.alert_group_interval,
            repeat_interval=settings.alert_repeat_interval,
            once_ttl=settings.alert_once_ttl,
            rate_threshold=settings.alert_rate_threshold,
            rate_min_stops=settings.alert_rate_min_stops,
            rate_window=settings.alert_rate_window,
            stale_after=settings.alert_stale_after,
            quiet_after=settings.alert_quiet_after,
            heartbeat_ttl=settings.heartbeat_ttl,
            retry_base=settings.retry_base,
            retry_max=settings.retry_max,
            replicas=wait_of(settings),
        )

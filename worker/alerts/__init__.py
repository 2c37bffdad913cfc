"""The built-in alerting consumer: rules, sinks, once-only delivery, grouping, silences."""

from .consumer import AlertsConsumer, make_alerts_consumer
from .notifications import Notification, RateChange, Summary
from .options import AlertOptions
from .rules import Alert, alert_for

__all__ = [
    "Alert",
    "AlertOptions",
    "AlertsConsumer",
    "Notification",
    "RateChange",
    "Summary",
    "alert_for",
    "make_alerts_consumer",
]

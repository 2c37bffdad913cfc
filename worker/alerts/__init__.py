"""The built-in alerting consumer: rules, sinks, grouping, silences."""

from .consumer import alerts_consumer
from .rules import Alert, alert_for

__all__ = ["Alert", "alert_for", "alerts_consumer"]

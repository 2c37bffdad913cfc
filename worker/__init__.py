"""The worker: consumer groups on the event streams, the consumer API, built-in alerts."""

from shared.events import Available, Event, Rejected, Started, Stopped

from .consumers import Consumer, ConsumerOptions, Context, SetupContext, consumer

__all__ = [
    "Available",
    "Consumer",
    "ConsumerOptions",
    "Context",
    "Event",
    "Rejected",
    "SetupContext",
    "Started",
    "Stopped",
    "consumer",
]

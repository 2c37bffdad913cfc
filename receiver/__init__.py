"""The webhook receiver: an aiohttp app that stores Bandwidth events on Redis Streams."""

from .app import create_app

__all__ = ["create_app"]

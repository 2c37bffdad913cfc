"""The clock of the alerts' scripts: the Redis server's, so every worker reads the same one
whatever its own clock says."""

from __future__ import annotations

from typing import Final

__all__ = ["NOW_MS"]

# Lua that sets `now` to the server's time in milliseconds; a script starts with it.
NOW_MS: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

"""Consumers to copy: each runs with `rtt worker --consumer examples.<module>:<name>`."""

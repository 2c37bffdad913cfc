"""The embedded server's helpers."""

from __future__ import annotations

from shared.embedded import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    """A master and its replica are built before either binds: they must get two ports,
    though the kernel offers a just-closed port again (hundreds of times in 3,000 tries)."""
    ports = [free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)

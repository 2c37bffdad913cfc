"""The `rtt` command: wires the receiver, the worker and the operator tools together."""

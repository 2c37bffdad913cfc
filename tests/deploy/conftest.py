"""The containerised deployment runs under `make test-deploy` only (RTT_TEST_DEPLOY=1):
it needs a Docker engine and takes minutes, so `make test` does not collect it."""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("RTT_TEST_DEPLOY") == "1" else ["test_*.py"]

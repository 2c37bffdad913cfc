"""The containerised deployment (test_compose.py) runs under `make test-deploy` only
(RTT_TEST_DEPLOY=1): it needs a Docker engine and takes minutes, so `make test` does not
collect it. The checks of the same files that need no engine (test_files.py,
test_kubernetes.py) run everywhere."""

from __future__ import annotations

import os

collect_ignore = [] if os.environ.get("RTT_TEST_DEPLOY") == "1" else ["test_compose.py"]

"""docker-compose.yml run as a user runs it: the image built from the Dockerfile, Valkey,
two receivers, three workers, and a webhook sink for the alerts, all in real containers.

`make test-deploy` (tests/deploy/run.sh) builds the images and sets RTT_IMAGE,
RTT_VALKEY_IMAGE and RTT_COMPOSE. The tests run in order against one deployment, as its
life goes: up, traffic through a worker crash and a Redis restart, the operator commands,
an outage the spool rides out, down. Every byte stays on this machine: the containers
talk on compose's network, the test reaches them on loopback-published ports. The
receivers' Basic credentials and the workers' webhook URL are secret files, as README
tells users to give them.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from shared.embedded import free_port
from shared.keys import Keys
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).parents[2]
HERE = Path(__file__).parent
PROJECT = os.environ.get("RTT_TEST_DEPLOY_PROJECT", "rtt-deploy-test")
COMPOSE = shlex.split(os.environ.get("RTT_COMPOSE", "docker compose"))
RECEIVERS = ("receiver-1", "receiver-2")
WORKERS = 3
SERVICES = {"redis": 1, "alert-sink": 1, "worker": WORKERS, **dict.fromkeys(RECEIVERS, 1)}
EVENTS_PER_RECEIVER = {"closed": 900, "error": 100}  # 2,000 in all, 10 % alerting
KEYS = Keys("rtt", 1)
GRACE_S = {"receiver-1": 60, "receiver-2": 60, "worker": 45, "redis": 10, "alert-sink": 10}


def _docker(*args: str, timeout_s: float = 120) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


@dataclass
class Deployment:
    env: dict[str, str]
    ports: dict[str, int]
    log_dir: Path
    basic_auth: str  # user:password, from the secret file the receivers read
    secret_values: tuple[str, ...]  # what must never show in an environment or a log
    sent: Counter[str] = field(default_factory=Counter)  # statuses of every event posted
    _redis: Redis | None = None

    def compose(
        self, *args: str, check: bool = True, timeout_s: float = 300, stderr: bool = False
    ) -> str:
        files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(HERE / "compose.test.yml")]
        result = subprocess.run(
            [*COMPOSE, "-p", PROJECT, *files, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if check:
            assert result.returncode == 0, f"compose {' '.join(args)}: {result.stderr}"
        return result.stdout + (result.stderr if stderr else "")

    def containers(self) -> list[dict[str, Any]]:
        ids = _docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}")
        if not ids.split():
            return []
        return list(json.loads(_docker("inspect", *ids.split())))

    def by_service(self) -> dict[str, list[dict[str, Any]]]:
        result: dict[str, list[dict[str, Any]]] = {}
        for item in self.containers():
            result.setdefault(item["Config"]["Labels"]["com.docker.compose.service"], []).append(
                item
            )
        return result

    def save_logs(self) -> None:
        logs = self.compose("logs", "--no-color", "-t", check=False)
        (self.log_dir / "compose.log").write_text(logs)

    def url(self, receiver: str, path: str = "/realTimeTranscriptionEvents") -> str:
        return f"http://127.0.0.1:{self.ports[receiver]}{path}"

    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis(port=self.ports["redis"], socket_timeout=10)
        return self._redis

    def alerts(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.ports['alert-sink']}/alerts"
        with urllib.request.urlopen(url, timeout=10) as response:
            return list(json.loads(response.read()))

    def send(
        self, receiver: str, cause: str, count: int, rate: float, *, auth: bool = True
    ) -> subprocess.Popen[str]:
        args = [
            "--url",
            self.url(receiver),
            "--type",
            "stopped",
            "--cause",
            cause,
            "--count",
            str(count),
            "--rate",
            str(rate),
            "--concurrency",
            "8",
            "--json",
            "--no-progress",
            *(["--user", self.basic_auth] if auth else []),
        ]
        return subprocess.Popen(
            [sys.executable, "-m", "rtt", "send", *args], stdout=subprocess.PIPE, text=True
        )

    def collect(self, senders: list[subprocess.Popen[str]]) -> None:
        for sender in senders:
            out, _ = sender.communicate(timeout=300)
            self.sent.update(json.loads(out)["statuses"])


def _health(dep: Deployment) -> dict[str, str]:
    return {
        item["Name"].lstrip("/"): item["State"].get("Health", {}).get("Status", "none")
        if item["State"]["Running"]
        else item["State"]["Status"]
        for items in dep.by_service().values()
        for item in items
    }


def _wait_healthy(dep: Deployment, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        services = dep.by_service()
        health = _health(dep)
        counts = {name: len(items) for name, items in services.items()}
        if counts == SERVICES and set(health.values()) == {"healthy"}:
            return
        assert time.monotonic() < deadline, f"not all healthy after {timeout_s}s: {health}"
        time.sleep(1)


def _stream(dep: Deployment) -> list[dict[str, Any]]:
    entries = dep.redis().xrange(KEYS.events())
    return [json.loads(fields[b"body"]) for _, fields in entries]


def _spool_depth(dep: Deployment, receiver: str) -> float:
    with urllib.request.urlopen(dep.url(receiver, "/metrics"), timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("rtt_receiver_spool_depth"):
                return float(line.split()[-1])
    raise AssertionError("no rtt_receiver_spool_depth on /metrics")


def _write_secrets(directory: Path, values: dict[str, str]) -> None:
    """Secret files as README has users write them: readable by the containers' user
    (uid 10001) inside a directory only its owner enters."""
    directory.chmod(0o700)
    for name, value in values.items():
        path = directory / name
        path.write_text(value + "\n")
        path.chmod(0o644)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    ports = {name: free_port() for name in (*RECEIVERS, "redis", "alert-sink")}
    password, token = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    secrets_dir = tmp_path_factory.mktemp("secrets")
    _write_secrets(
        secrets_dir,
        {
            "basic_auth": f"bandwidth:{password}",
            # A token in the URL, as many webhooks carry one: the sink ignores the query.
            "alert_webhook_url": f"http://alert-sink:8090/alerts?token={token}",
        },
    )
    env = {
        **os.environ,
        "RTT_RECEIVER_1_PORT": str(ports["receiver-1"]),
        "RTT_RECEIVER_2_PORT": str(ports["receiver-2"]),
        "RTT_TEST_REDIS_PORT": str(ports["redis"]),
        "RTT_TEST_SINK_PORT": str(ports["alert-sink"]),
        "RTT_TEST_DEPLOY_DIR": str(HERE),
        "RTT_SECRETS_DIR": str(secrets_dir),
        # One group per transcription: every alert goes out at once, as itself, so the
        # sink can be counted by alert key (grouping is tested in tests/alerts/).
        "RTT_ALERT_GROUP_BY": "transcription_id",
    }
    log_dir = Path(os.environ.get("RTT_TEST_DEPLOY_LOGS", tmp_path_factory.mktemp("deploy")))
    deployment = Deployment(
        env=env,
        ports=ports,
        log_dir=log_dir,
        basic_auth=f"bandwidth:{password}",
        secret_values=(password, token),
    )
    deployment.compose("down", "-v", "--remove-orphans", "-t", "5")  # what a broken run left
    try:
        deployment.compose("up", "-d", "--no-build", "--scale", f"worker={WORKERS}")
        yield deployment
    finally:
        if deployment.containers():  # the last test saves them before it removes them
            deployment.save_logs()
        deployment.compose("down", "-v", "--remove-orphans", "-t", "70", check=False)


def test_up_brings_every_service_to_healthy(dep: Deployment) -> None:
    started = time.monotonic()
    _wait_healthy(dep, 240)
    print(f"\nup -> all healthy in {time.monotonic() - started:.1f}s")
    for items in dep.by_service().values():
        assert all(
            item["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped" for item in items
        )
    # The spool volume took the image's ownership: the receiver's user can write there.
    for receiver in RECEIVERS:
        listing = dep.compose("exec", "-T", receiver, "stat", "-c", "%u %n", "/spool", "/spool/p0")
        assert listing.split() == ["10001", "/spool", "10001", "/spool/p0"], listing


def test_secrets_come_from_files_and_the_receivers_refuse_posts_without_them(
    dep: Deployment,
) -> None:
    for name, items in dep.by_service().items():
        for item in items:
            env = "\n".join(item["Config"]["Env"])
            assert not [value for value in dep.secret_values if value in env], name
    for receiver in RECEIVERS:
        [container] = dep.by_service()[receiver]
        assert "RTT_BASIC_AUTH_FILE=/run/secrets/basic_auth" in container["Config"]["Env"]
    dep.collect([dep.send(receiver, "closed", 5, rate=0, auth=False) for receiver in RECEIVERS])
    assert dep.sent == {"401": 10}, dep.sent
    dep.sent.clear()
    assert dep.redis().xlen(KEYS.events()) == 0
    logs = dep.compose("logs", "--no-color", *RECEIVERS)
    assert "receiver_open_to_anyone" not in logs


def test_every_204_stored_once_and_every_alert_sent_once_through_a_crash_and_a_restart(
    dep: Deployment,
) -> None:
    senders = [
        dep.send(receiver, cause, count, rate=count / 15)  # each sender runs about 15 s
        for receiver in RECEIVERS
        for cause, count in EVENTS_PER_RECEIVER.items()
    ]
    time.sleep(4)
    [victim, *_] = dep.by_service()["worker"]
    os.kill(victim["State"]["Pid"], signal.SIGKILL)  # a crash: the restart policy applies
    killed_at = time.time()
    time.sleep(4)
    restart_at = time.time()
    dep.compose("restart", "-t", "10", "redis")
    dep.collect(senders)
    total = sum(EVENTS_PER_RECEIVER.values()) * len(RECEIVERS)
    assert dep.sent == {"204": total}, dep.sent

    def settled() -> bool:
        if len(_stream(dep)) < total:
            return False
        groups = {g["name"]: g for g in dep.redis().xinfo_groups(KEYS.events())}
        alerts = groups[b"alerts"] if b"alerts" in groups else groups["alerts"]
        return bool(alerts["pending"] == 0 and alerts["lag"] == 0)

    wait_for(settled, 180, "the workers to settle every entry")
    bodies = _stream(dep)
    ids = Counter(body["realTimeTranscription"]["id"] for body in bodies)
    assert len(bodies) == total
    assert [tid for tid, n in ids.items() if n > 1] == []
    alerting = {b["realTimeTranscription"]["id"] for b in bodies if b.get("cause") == "error"}
    assert len(alerting) == EVENTS_PER_RECEIVER["error"] * len(RECEIVERS)

    def delivered() -> list[dict[str, Any]]:
        posts = [post for post in dep.alerts() if post["body"].get("kind") == "alert"]
        return posts if len({p["body"]["alert_key"] for p in posts}) >= len(alerting) else []

    posts = wait_for(delivered, 120, "every alert at the sink")
    by_key = Counter(post["body"]["alert_key"] for post in posts)
    # A sink may be sent an alert twice: when the worker dies, or Redis fails it (as in
    # this restart), between the sink's answer and the record of it; the repeat carries
    # the same Idempotency-Key, which the sink folds away. Counted by key, it is once.
    assert all(post["idempotency_key"] == post["body"]["alert_key"] for post in posts)
    assert {post["body"]["transcription_id"] for post in posts} == alerting
    assert len(by_key) == len(alerting)
    print(
        f"\nsent {total}, 204 {dep.sent['204']}, stored {len(bodies)}, duplicated "
        f"{sum(n - 1 for n in ids.values())}, alerting {len(alerting)}, alerts at the sink "
        f"{len(by_key)} keys in {len(posts)} posts"
    )
    for key in (key for key, n in by_key.items() if n > 1):
        times = [round(p["at"] - killed_at, 1) for p in posts if p["body"]["alert_key"] == key]
        print(
            f"posted again: {key}, at s after the kill {times} (Redis restart at "
            f"{round(restart_at - killed_at, 1)})"
        )
    # The killed worker came back by itself, in the same container, and is healthy again.
    _wait_healthy(dep, 180)
    [again] = [w for w in dep.by_service()["worker"] if w["Id"] == victim["Id"]]
    assert again["RestartCount"] == 1


def test_operator_commands_run_inside_the_deployment(dep: Deployment) -> None:
    stats = dep.compose("exec", "-T", "worker", "rtt", "stats")
    assert "stream rtt:events  length 2000" in stats, stats
    assert "dead letters: 0" in stats
    dlq = dep.compose("exec", "-T", "worker", "rtt", "dlq", "list", stderr=True)
    assert "0 dead letter(s)" in dlq, dlq
    as_json = dep.compose("run", "--rm", "--no-deps", "-T", "worker", "stats", "--json")
    [stream] = json.loads(as_json)["streams"]
    assert (stream["stream"], stream["length"]) == ("rtt:events", 2000)
    assert [group["pending"] for group in stream["groups"]] == [0]


def test_the_spool_volume_keeps_events_while_redis_is_down(dep: Deployment) -> None:
    before = len(_stream(dep))
    dep.compose("stop", "-t", "10", "redis")
    dep.collect([dep.send(receiver, "closed", 100, rate=50) for receiver in RECEIVERS])
    assert dep.sent["204"] == before + 200, dep.sent
    for receiver in RECEIVERS:
        assert _spool_depth(dep, receiver) == 100
        segments = dep.compose(
            "exec",
            "-T",
            receiver,
            "find",
            "/spool",
            "-name",
            "*.seg",
            "-size",
            "+0",
            "-user",
            "10001",
        )
        assert segments.split(), f"{receiver}: no spool segment written"
    dep.compose("start", "redis")
    wait_for(lambda: len(_stream(dep)) == before + 200, 120, "the spools drained into Redis")
    wait_for(lambda: all(_spool_depth(dep, r) == 0 for r in RECEIVERS), 60, "empty spools")
    bodies = _stream(dep)
    assert len({body["realTimeTranscription"]["id"] for body in bodies}) == len(bodies)
    logs = dep.compose("logs", "--no-color", *RECEIVERS)
    assert "spool_unusable" not in logs


def _stop_times(since: float, until: float) -> dict[str, tuple[float, int]]:
    """Per container: seconds from the first SIGTERM Docker sent it to its exit, exit code."""
    events = _docker(
        "events",
        "--since",
        f"{since:.3f}",
        "--until",
        f"{until:.3f}",
        "--filter",
        "type=container",
        "--filter",
        f"label=com.docker.compose.project={PROJECT}",
        "--format",
        "{{json .}}",
    )
    term: dict[str, int] = {}
    result: dict[str, tuple[float, int]] = {}
    for line in events.splitlines():
        event = json.loads(line)
        name, attributes = event["Actor"]["Attributes"]["name"], event["Actor"]["Attributes"]
        if event["Action"] == "kill" and attributes.get("signal") == "15":
            term.setdefault(name, event["timeNano"])
        elif event["Action"] == "die" and name in term:
            result[name] = ((event["timeNano"] - term[name]) / 1e9, int(attributes["exitCode"]))
    return result


def test_down_stops_every_container_with_exit_0_within_its_grace(dep: Deployment) -> None:
    started = time.time()
    dep.compose("stop", timeout_s=180)  # what `down` does first, keeping the containers
    dep.save_logs()
    # No secret in any container's log, through a whole life of the deployment.
    logs = (dep.log_dir / "compose.log").read_text()
    assert [value for value in dep.secret_values if value in logs] == []
    stopped = dep.by_service()
    times = _stop_times(started - 1, time.time() + 1)
    for service, items in stopped.items():
        for item in items:
            state, name = item["State"], item["Name"].lstrip("/")
            # Exit 0, not 137: each stopped on SIGTERM by itself, before any SIGKILL.
            assert (state["Running"], state["ExitCode"], state["OOMKilled"]) == (False, 0, False)
            took_s, code = times[name]
            assert code == 0
            assert took_s < GRACE_S[service], (name, times)
    print(
        f"\nstop: seconds from SIGTERM to exit: { {n: round(t, 1) for n, (t, _) in times.items()} }"
    )
    dep.compose("down", "-v", "--remove-orphans")
    assert dep.containers() == []
    label = f"label=com.docker.compose.project={PROJECT}"
    assert _docker("volume", "ls", "-q", "--filter", label).split() == []
    assert _docker("network", "ls", "-q", "--filter", label).split() == []

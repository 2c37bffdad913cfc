"""A managed Redis as production has it: TLS with client certificates, README's two ACL
users, and every secret set (from files where it can be). The whole path runs as separate
processes: receive, consume, alert, dead letters, stats, silences; on one node, and on a
Cluster with what README adds to the users there.

Redis must refuse nothing (`ACL LOG` stays empty), and no secret may appear in anything
the programs print.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import msgspec
import pytest
from aiohttp import encode_basic_auth
from redis.cluster import RedisCluster

from shared.embedded import free_port
from shared.keys import Keys
from tests.alerts.sinkserver import SinkServer
from tests.bodies import sample_body
from tests.helpers import eventually
from tests.processes import Program, start_worker
from tests.tls_fixtures import tls_env
from tests.tlsredis import Certificates, TlsCluster, TlsRedis
from tests.worker.helpers import REPO

pytestmark = [pytest.mark.integrations, pytest.mark.slow]
JSON = {"Content-Type": "application/json"}


def readme_acl(
    prefix: str, passwords: dict[str, str], *, cluster: bool = False
) -> dict[str, list[str]]:
    """README's `ACL SETUSER` lines, for users named `<prefix>-receiver` and `-worker`
    with keys under `prefix` instead of `rtt`, and what README adds for a Cluster."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Least-privilege ACL users", 1)[1].split("\n### ", 1)[0]
    [for_cluster] = re.findall(r"On a Redis Cluster, add `([^`]+)` to both users", section)
    users: dict[str, list[str]] = {}
    for line in re.findall(r"^ACL SETUSER .*$", section, re.M):
        words = shlex.split(line)[2:]
        role = words[0].removeprefix("rtt-")
        args = [f"{prefix}-{role}"]
        for word in words[1:]:
            if word.startswith(">"):
                word = ">" + passwords[role]
            elif word.startswith("~"):
                word = word.replace("rtt:", f"{prefix}:")
            args.append(word)
        users[role] = [*args, *for_cluster.split()] if cluster else args
    assert set(users) == {"receiver", "worker"}, users
    return users


def _secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / "secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(value + "\n")  # as `echo value > file` leaves it
    return str(path)


async def _run(args: Sequence[str], env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtt",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(errors="replace")


async def _wait_exit(program: Program, sig: signal.Signals) -> int:
    program.send(sig)
    return await asyncio.to_thread(program.stop, sig, 30)


@dataclass(frozen=True)
class Deployment:
    """One TLS node, or a TLS cluster (whose ACLs are per node)."""

    nodes: list[TlsRedis]
    cluster: bool

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.nodes[0].port}"

    def url(self, userinfo: str) -> str:
        if self.cluster:
            return f"rediss+cluster://{userinfo}@{self.host}"
        return f"rediss://{userinfo}@{self.host}/0"

    def on_every_node(self, *args: Any) -> list[Any]:
        replies = []
        for node in self.nodes:
            with node.client() as admin:
                replies.append(admin.execute_command(*args))
        return replies

    def xlen(self, key: str) -> int:
        if not self.cluster:
            with self.nodes[0].client() as admin:
                return int(admin.xlen(key))
        certs = self.nodes[0].certs
        with RedisCluster(
            host="127.0.0.1",
            port=self.nodes[0].port,
            ssl=True,
            ssl_ca_certs=str(certs.ca),
            ssl_certfile=str(certs.client_cert),
            ssl_keyfile=str(certs.client_key),
            ssl_cert_reqs="none",
        ) as admin:
            return int(admin.xlen(key))


@pytest.fixture(params=["single", "cluster"])
def deployment(request: pytest.FixtureRequest, tls_server: TlsRedis) -> Deployment:
    if request.param == "single":
        return Deployment([tls_server], cluster=False)
    cluster: TlsCluster = request.getfixturevalue("tls_cluster")
    return Deployment([cast(TlsRedis, node) for node in cluster.nodes], cluster=True)


def _acl_denials(deployment: Deployment, users: Sequence[str]) -> list[dict[str, Any]]:
    found = []
    for entries in deployment.on_every_node("ACL", "LOG"):
        found += _denials_of(entries, users)
    return found


def _denials_of(entries: Any, users: Sequence[str]) -> list[dict[str, Any]]:
    found = []
    for entry in entries:
        # redis-py reads ACL LOG into a dict per entry, a RESP2 reply into a flat list.
        fields = (
            entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=True))
        )
        info = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}
        username = info.get("username")
        name = username.decode() if isinstance(username, bytes) else username
        if name in users:
            found.append({k: v.decode() if isinstance(v, bytes) else v for k, v in info.items()})
    return found


async def test_whole_path_with_readme_acl_users_over_mutual_tls_and_no_secret_printed(
    deployment: Deployment, certs: Certificates, prefix: str, tmp_path: Path
) -> None:
    secrets = {
        "receiver": f"recv-pass-{prefix}-Zq9",
        "worker": f"work-pass-{prefix}-Xk7",
        "basic": f"bw-pass-{prefix}-Lm3",
        "webhook": f"hook-token-{prefix}-Pp1",
        "slack": f"slack-token-{prefix}-Ss2",
        "pagerduty": f"PDKEY{prefix}0123456789abcdef"[:32],
    }
    users = readme_acl(
        prefix,
        {"receiver": secrets["receiver"], "worker": secrets["worker"]},
        cluster=deployment.cluster,
    )
    deployment.on_every_node("ACL", "LOG", "RESET")
    for args in users.values():
        deployment.on_every_node("ACL", "SETUSER", *args)
    user_names = [args[0] for args in users.values()]
    sinks = {"webhook": SinkServer(), "slack": SinkServer(), "pagerduty": SinkServer(202)}
    for sink in sinks.values():
        await sink.start()
    port, metrics_port = free_port(), free_port()
    common = {
        **tls_env(deployment.nodes[0], certs),
        "RTT_KEY_PREFIX": prefix,
        "RTT_SHARDS": "3" if deployment.cluster else "1",
        "RTT_LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
    }
    del common["RTT_REDIS_URL"]
    receiver_env = {
        **common,
        "RTT_REDIS_URL_FILE": _secret_file(
            tmp_path, "receiver-url", deployment.url(f"{prefix}-receiver:{secrets['receiver']}")
        ),
        "RTT_BASIC_AUTH_FILE": _secret_file(tmp_path, "basic", f"bandwidth:{secrets['basic']}"),
        "RTT_HOST": "127.0.0.1",
        "RTT_PORT": str(port),
        "RTT_SPOOL_DIR": str(tmp_path / "spool"),
    }
    worker_env = {
        **common,
        "RTT_REDIS_URL": deployment.url(f"{prefix}-worker"),
        "RTT_REDIS_PASSWORD_FILE": _secret_file(tmp_path, "worker-password", secrets["worker"]),
        "RTT_ALERT_WEBHOOK_URL_FILE": _secret_file(
            tmp_path, "webhook", f"{sinks['webhook'].url}/{secrets['webhook']}"
        ),
        "RTT_ALERT_SLACK_WEBHOOK_URL": f"{sinks['slack'].url}/services/{secrets['slack']}",
        "RTT_ALERT_PAGERDUTY_ROUTING_KEY_FILE": _secret_file(
            tmp_path, "pagerduty", secrets["pagerduty"]
        ),
        "RTT_ALERT_PAGERDUTY_URL": sinks["pagerduty"].url,
        "RTT_ALERT_GROUP_INTERVAL": "1s",
        "RTT_STATS_INTERVAL": "500ms",
        "RTT_MAX_DELIVERIES": "2",
        "RTT_RETRY_BASE": "50ms",
        "RTT_RETRY_MAX": "100ms",
        "RTT_BLOCK": "100ms",
        "RTT_HEARTBEAT_INTERVAL": "200ms",
        "RTT_HEARTBEAT_TTL": "1s",
        "RTT_WORKER_METRICS_PORT": str(metrics_port),
        "RTT_HOST": "127.0.0.1",
        "RTT_WORKER_ID": "w-acl",
    }
    receiver = Program(["rtt", "receiver"], receiver_env, tmp_path / "receiver.log")
    worker = start_worker(
        worker_env,
        tmp_path / "worker.log",
        "--consumer",
        "tests.acl_plugins:always_fails",
        rtt=True,
    )
    printed: list[str] = []
    keys = Keys(prefix)
    try:
        base = f"http://127.0.0.1:{port}"
        auth = {**JSON, "Authorization": encode_basic_auth("bandwidth", secrets["basic"])}
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(base + "/readyz") as resp:
                        return resp.status == 200 and (await resp.json())["store"] == "redis"
                except aiohttp.ClientError:
                    return False

            await eventually(ready, 20, "receiver ready on Redis")

            async def post(body: bytes, headers: dict[str, str] = auth) -> int:
                async with http.post(
                    base + "/realTimeTranscriptionEvents", data=body, headers=headers
                ) as resp:
                    return resp.status

            failing = [
                sample_body("stopped", cause="error", call_id=f"c-{n}", transcription_id=f"t-{n}")
                for n in range(3)
            ]
            closed = sample_body("stopped", call_id="c-ok", transcription_id="t-ok")
            for body in [*failing, closed, failing[0]]:  # the last one a repeat delivery
                assert await post(body) == 204
            assert await post(b'{"eventType": "realTimeTranscriptionStopped"') == 400
            assert await post(sample_body("stopped", eventType="brandNew")) == 204
            assert await post(closed, JSON) == 401

            # Consume and alert: the first failure reaches every sink, then the summary of
            # its group (the other two); every event reaches the DLQ of the failing consumer.
            for name, sink in sinks.items():
                await eventually(lambda sink=sink: len(sink.accepted) >= 2, 30, f"{name} alerts")
            dlq_length = lambda: deployment.xlen(keys.dlq)  # noqa: E731
            await eventually(lambda: dlq_length() == 4, 30, "4 dead letters")
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert resp.status == 200
                assert "rtt_worker" in await resp.text()

            # The operator commands, with the worker's user.
            ops = {k: v for k, v in worker_env.items() if k.startswith(("RTT_REDIS", "RTT_KEY"))}
            ops["RTT_LOG_FORMAT"] = "json"
            for args in (["stats", "--json"], ["dlq", "list", "--json"]):
                code, out = await _run(args, ops)
                printed.append(out)
                assert code == 0, out
            first = msgspec.json.decode(out.splitlines()[0])["id"]
            for args in (["dlq", "show", first], ["dlq", "replay", first]):
                code, out = await _run(args, ops)
                printed.append(out)
                assert code == 0, out
            await eventually(lambda: dlq_length() == 4, 30, "the replayed entry back in the DLQ")
            code, out = await _run(["dlq", "purge", "--all", "--group", "always_fails"], ops)
            printed.append(out)
            assert code == 0, out
            code, out = await _run(
                ["silence", "add", "--match", "cause=error", "--for", "1h", "--author", "t"], ops
            )
            printed.append(out)
            assert code == 0, out
            silence_id = out.split()[0]
            muted = sample_body("stopped", cause="error", call_id="c-m", transcription_id="t-m")
            assert await post(muted) == 204
            await eventually(
                lambda: worker.named("transcription_alert_silenced"), 30, "the muted alert"
            )
            for args in (["silence", "list", "--json"], ["silence", "remove", silence_id]):
                code, out = await _run(args, ops)
                printed.append(out)
                assert code == 0, out
            # Let the upkeep (trim, stats line) run with these rights too.
            await eventually(lambda: len(worker.named("worker_stats")) >= 4, 30, "stats lines")
    finally:
        worker_code = await _wait_exit(worker, signal.SIGTERM)
        receiver_code = await _wait_exit(receiver, signal.SIGTERM)
        for sink in sinks.values():
            await sink.stop()
        for name in user_names:
            deployment.on_every_node("ACL", "DELUSER", name)
    everything = "\n".join([receiver.text(), worker.text(), *printed])
    assert worker_code == 0, worker.text()[-3000:]
    assert receiver_code == 0, receiver.text()[-3000:]
    assert _acl_denials(deployment, user_names) == []
    assert "NOPERM" not in everything
    assert "redis_permission_denied" not in everything
    for name, secret in secrets.items():
        assert secret not in everything, f"the {name} secret was printed"

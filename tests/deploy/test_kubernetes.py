"""deploy/kubernetes/: every manifest valid against Kubernetes' own schemas (offline, with
kubernetes-validate), and the pieces agree with each other and with the program: probes on
the receiver's real paths and port, the spool on a volume, stable worker ids, grace
periods above each role's shutdown, KEDA watching the stream and group the workers use,
and every secret a file from the Secret's volume, never an environment value."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from shared.credentials import FILE_SUFFIX
from shared.keys import Keys
from shared.settings import ENV_PREFIX, SECRET_SETTINGS, SECRET_VARIABLES, Settings, load_settings

ROOT = Path(__file__).parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest release still widely run and the newest the package knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
NAME_LABEL = {"app.kubernetes.io/name": "rtt-events"}
SECRET_NAME = "rtt-events-secrets"
KUSTOMIZATION: dict[str, Any] = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


DOCUMENTS = _documents()


def _one(kind: str, name: str) -> dict[str, Any]:
    [found] = [d for _, d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


RECEIVER = _one("Deployment", "rtt-receiver")
WORKER = _one("StatefulSet", "rtt-worker")
CONFIG = _one("ConfigMap", "rtt-events")


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    [container] = workload["spec"]["template"]["spec"]["containers"]
    return container


def _settings(workload: dict[str, Any]) -> Settings:
    """The settings the pod's program sees: the ConfigMap, then the container's own env."""
    env = {k: v for k, v in CONFIG["data"].items() if k.startswith(ENV_PREFIX)}
    env.update(
        {
            e["name"]: e["value"]
            for e in _container(workload)["env"]
            if "value" in e and not e["name"].endswith(FILE_SUFFIX)  # files exist in the pod
        }
    )
    return load_settings(env=env)


# Custom resources (KEDA's) and kustomize's own file have no schema in Kubernetes.
NOT_KUBERNETES = {"ScaledObject", "Kustomization"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "document",
    [document for _, document in DOCUMENTS if document["kind"] not in NOT_KUBERNETES],
    ids=lambda document: f"{document['kind']}/{document['metadata']['name']}",
)
def test_manifest_is_valid_kubernetes(document: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(document, version, strict=True)  # raises naming the field


def test_every_manifest_is_checked_and_listed_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    kinds = {document["kind"] for _, document in DOCUMENTS}
    workloads = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "StatefulSet"}
    assert kinds == workloads | NOT_KUBERNETES


def test_every_setting_named_is_real_with_a_valid_value() -> None:
    names = {field.upper() for field in Settings.__struct_fields__}
    for workload in (RECEIVER, WORKER):
        keys = [e["name"] for e in _container(workload)["env"]] + list(CONFIG["data"])
        unknown = [
            k
            for k in keys
            if k.startswith(ENV_PREFIX)
            and k[len(ENV_PREFIX) :] not in names
            and k.removesuffix(FILE_SUFFIX) not in SECRET_VARIABLES
        ]
        assert unknown == []
        _settings(workload)  # raises ConfigError naming the variable if a value is wrong


def test_receiver_probes_its_real_paths_and_keeps_the_spool_on_a_volume() -> None:
    container = _container(RECEIVER)
    settings = _settings(RECEIVER)
    [port] = container["ports"]
    assert port["containerPort"] == settings.port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in RECEIVER["spec"]["template"]["spec"]["volumes"]}
    assert settings.spool_dir in mounts
    assert "emptyDir" in volumes[mounts[settings.spool_dir]]
    # The image's user writes the volume: fsGroup makes it theirs.
    security = RECEIVER["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsUser"] == security["fsGroup"] == 10001
    assert "useradd --create-home --uid 10001" in (ROOT / "Dockerfile").read_text()


def test_receiver_service_and_disruption_budget_select_its_pods() -> None:
    labels = RECEIVER["spec"]["template"]["metadata"]["labels"]
    service = _one("Service", "rtt-receiver")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == _container(RECEIVER)["ports"][0]["name"]
    budget = _one("PodDisruptionBudget", "rtt-receiver")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < RECEIVER["spec"]["replicas"]


def test_workers_have_stable_ids_and_a_fitting_health_check() -> None:
    container = _container(WORKER)
    [worker_id] = [e for e in container["env"] if e["name"] == "RTT_WORKER_ID"]
    assert worker_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["readinessProbe"]["exec"]["command"] == ["rtt", "health", "worker"]
    settings = _settings(WORKER)
    [port] = container["ports"]
    assert port["containerPort"] == settings.worker_metrics_port
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": port["name"]}
    headless = _one("Service", WORKER["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_grace_periods_cover_each_roles_shutdown_with_margin() -> None:
    margin_s = 5
    receiver = _settings(RECEIVER)
    store_s = receiver.store_timeout.total_seconds()
    pre_stop = _container(RECEIVER)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    in_flight_s = store_s + receiver.read_timeout.total_seconds() + 5
    receiver_needs = float(pre_stop[1]) + in_flight_s + store_s
    receiver_needs += receiver.shutdown_timeout.total_seconds()
    grace = RECEIVER["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= receiver_needs + margin_s
    worker_needs = _settings(WORKER).shutdown_timeout.total_seconds() + 2
    assert WORKER["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= (
        worker_needs + margin_s
    )


def test_every_container_requests_resources_and_runs_unprivileged() -> None:
    for workload in (RECEIVER, WORKER):
        container = _container(workload)
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert "memory" in container["resources"]["limits"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        assert workload["spec"]["template"]["metadata"]["labels"].items() >= NAME_LABEL.items()


def test_keda_scales_the_worker_statefulset_on_its_consumer_group() -> None:
    scaled = _one("ScaledObject", "rtt-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "StatefulSet")
    assert target["name"] == WORKER["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] >= 1  # alerts go out as events arrive
    streams = Keys(_settings(WORKER).key_prefix, _settings(WORKER).shards).event_streams()
    env = {e.get("configMapRef", {}).get("name") for e in _container(WORKER)["envFrom"]}
    assert "rtt-events" in env
    triggers = scaled["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    for trigger in triggers:
        metadata = trigger["metadata"]
        assert metadata["stream"] in streams
        assert metadata["consumerGroup"] == "alerts"
        assert metadata["addressFromEnv"] in CONFIG["data"]
        assert CONFIG["data"][metadata["addressFromEnv"]] in CONFIG["data"]["RTT_REDIS_URL"]
        thresholds = {"pendingEntriesCount", "lagCount"} & metadata.keys()
        assert len(thresholds) == 1
        assert int(metadata[thresholds.pop()]) > 0
    assert any("pendingEntriesCount" in t["metadata"] for t in triggers)


def _secret_mounts(workload: dict[str, Any]) -> dict[str, str]:
    """mountPath -> volume name, for the volumes of the Secret `rtt-events-secrets`."""
    volumes = {
        v["name"]: v
        for v in workload["spec"]["template"]["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == SECRET_NAME
    }
    return {
        m["mountPath"]: m["name"]
        for m in _container(workload).get("volumeMounts", [])
        if m["name"] in volumes
    }


def test_no_secret_reaches_a_container_as_a_plain_environment_value() -> None:
    """An env value (plain or `secretKeyRef`) shows in `kubectl describe`, the pod spec and
    every process listing of the container: each secret is a file, `RTT_<NAME>_FILE`."""
    config = {k: v for k, v in CONFIG["data"].items() if k in SECRET_VARIABLES}
    # The ConfigMap's Redis URL names the server, never a password.
    assert config.keys() <= {"RTT_REDIS_URL"}
    assert all(urlsplit(url).password is None for url in config.values())
    for workload in (RECEIVER, WORKER):
        container = _container(workload)
        assert [e for e in container["envFrom"] if "secretRef" in e] == []
        for entry in container["env"]:
            assert entry["name"] not in SECRET_VARIABLES, entry["name"]
            assert "secretKeyRef" not in entry.get("valueFrom", {}), entry["name"]


def test_each_secret_file_setting_points_into_the_mounted_secret() -> None:
    generated = {
        Path(file).name: file
        for generator in KUSTOMIZATION["secretGenerator"]
        if generator["name"] == SECRET_NAME
        for file in generator["files"]
    }
    assert generated["basic_auth"] == "secrets/basic_auth"
    for workload in (RECEIVER, WORKER):
        mounts = _secret_mounts(workload)
        assert mounts, workload["metadata"]["name"]
        for entry in _container(workload)["env"]:
            if not entry["name"].endswith(FILE_SUFFIX):
                continue
            directory, _, key = entry["value"].rpartition("/")
            assert directory in mounts, entry
            # The file is the setting's own name, and the Secret is made with that file.
            assert ENV_PREFIX + key.upper() + FILE_SUFFIX == entry["name"], entry
            assert key in generated, entry
        spec = workload["spec"]["template"]["spec"]
        for volume in spec["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] & 0o007 == 0  # not world-readable
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    # A receiver is never open by accident: its credentials are not optional.
    env = {e["name"]: e.get("value") for e in _container(RECEIVER)["env"]}
    assert env["RTT_BASIC_AUTH_FILE"].endswith("/basic_auth")


def test_the_manifests_show_every_secret_settings_file_form() -> None:
    """The optional ones as comments, ready to uncomment, in the workloads that use them."""
    text = {name: (MANIFESTS / name).read_text() for name in ("receiver.yaml", "worker.yaml")}
    kustomization = (MANIFESTS / "kustomization.yaml").read_text()
    for setting in SECRET_SETTINGS:
        variable = ENV_PREFIX + setting.upper() + FILE_SUFFIX
        users = [name for name, manifest in text.items() if f"name: {variable}\n" in manifest]
        if setting.startswith("redis_"):
            assert users == ["receiver.yaml", "worker.yaml"], variable
        elif setting.startswith("alert_"):
            assert users == ["worker.yaml"], variable
        else:
            assert users == ["receiver.yaml"], variable
        for name in users:
            assert f"value: /run/secrets/rtt-events/{setting}\n" in text[name], variable
        assert f"- secrets/{setting}\n" in kustomization, setting

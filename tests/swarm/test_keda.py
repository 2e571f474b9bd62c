"""KEDA ScaledObjects and agent Deployments: documented fields only, agreeing with the
manifests and the topic catalog, and committed under strimzi/agents without drift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.runtime.manifest import AgentManifest, load_manifests, parse_manifest
from buildkit.catalog import AGENT_TASK_PARTITIONS, default_catalog
from buildkit.errors import ConfigError
from streams.swarm.keda import (
    DEFAULT_POLICY,
    DeploymentOptions,
    render_config_map,
    render_deployment,
    render_scaled_object,
    write_agent_manifests,
)
from streams.swarm.policy import ScalingPolicy
from tests.swarm.k8s_api import unknown_fields

REPO = Path(__file__).parents[2]
COMMITTED = REPO / "strimzi" / "agents"
KEDA_REFERENCE = Path(__file__).parents[3] / "shared" / "reference" / "keda"
MANIFESTS = load_manifests()
BEHAVIOR = "spec.advanced.horizontalPodAutoscalerConfig.behavior"

# No KEDA CRD is among the reference files, so the allowed ScaledObject fields are the
# union of the keys in the reference examples (KEDA 2.21's Kafka scaler page) plus
# these, each documented on KEDA's "ScaledObject specification" page
# (keda.sh/docs/<version>/reference/scaledobject-spec/) or its CPU / memory scaler
# pages. The behavior block is what KEDA hands to the HPA: it is checked against the
# autoscaling/v2 HorizontalPodAutoscalerBehavior schema separately.
DOCUMENTED = {
    "metadata.labels",
    "spec.cooldownPeriod",
    "spec.minReplicaCount",
    "spec.maxReplicaCount",
    BEHAVIOR,
    "spec.triggers[].metricType",  # cpu / memory scalers: Utilization or AverageValue
    "spec.triggers[].metadata.value",  # cpu / memory scalers: the target
}
# Maps whose keys are free-form (labels) or checked against another schema (behavior).
OPAQUE = {"metadata.labels", BEHAVIOR}


def key_paths(value: Any, path: str = "") -> Iterator[str]:
    """Every key path in ``value``: ``spec.triggers[].metadata.topic``."""
    if path in OPAQUE:
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from key_paths(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for item in value:
            yield from key_paths(item, f"{path}[]")
    else:
        yield path


def reference_paths() -> set[str]:
    paths: set[str] = set()
    files = sorted(KEDA_REFERENCE.glob("*.yaml"))
    assert files, f"no KEDA reference examples in {KEDA_REFERENCE}"
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc.get("kind") == "ScaledObject":
                paths |= set(key_paths(doc))
            elif set(doc) == {"triggers"}:  # the trigger specification excerpt
                paths |= set(key_paths(doc, "spec"))
    return paths


def trigger(scaled_object: dict[str, Any], kind: str = "kafka") -> dict[str, Any]:
    [found] = [t for t in scaled_object["spec"]["triggers"] if t["type"] == kind]
    return found


@pytest.fixture(params=MANIFESTS, ids=lambda m: m.name)
def manifest(request: pytest.FixtureRequest) -> AgentManifest:
    return request.param


def test_no_keda_crd_is_in_the_reference_so_examples_and_docs_set_the_fields():
    crds = [
        p for p in KEDA_REFERENCE.rglob("*.yaml") if "CustomResourceDefinition" in p.read_text()
    ]
    assert crds == [], "a KEDA CRD is available now: check ScaledObjects against its schema"


def test_scaled_objects_use_only_fields_of_the_keda_examples_and_docs(manifest: AgentManifest):
    allowed = reference_paths() | DOCUMENTED
    with_resources = ScalingPolicy.model_validate(
        {"maxReplicas": 20, "tasksPerAgent": 5, "targetCPU": 70, "targetMemory": 80}
    )
    for policy in (DEFAULT_POLICY, with_resources):
        body = render_scaled_object(manifest, policy)
        assert set(key_paths(body)) - allowed == set()
        behavior = body["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert unknown_fields(behavior, "V2HorizontalPodAutoscalerBehavior") == []
        for t in body["spec"]["triggers"]:
            # Trigger metadata is a map of strings in KEDA's API.
            assert all(isinstance(v, str) for v in t["metadata"].values()), t


def test_deployments_and_config_maps_use_only_fields_of_the_kubernetes_api(
    manifest: AgentManifest,
):
    options = DeploymentOptions(env={"LOG_LEVEL": "debug"}, env_from_secret="bar-kafka-sasl")
    for replicas in (None, 3):
        deployment = render_deployment(manifest, options, replicas)
        assert unknown_fields(deployment, "V1Deployment") == []
    assert unknown_fields(render_config_map(manifest), "V1ConfigMap") == []


def test_lag_threshold_is_tasks_per_agent():
    worker = MANIFESTS[0]
    for per_agent in (1, 5, 12):
        policy = ScalingPolicy.model_validate({"maxReplicas": 20, "tasksPerAgent": per_agent})
        assert trigger(render_scaled_object(worker, policy))["metadata"]["lagThreshold"] == str(
            per_agent
        )


def test_trigger_watches_the_agents_consumer_group_on_its_catalog_task_topic(
    manifest: AgentManifest,
):
    catalog = default_catalog()
    options = DeploymentOptions(bootstrap_servers="kafka.prod:9093")
    scaled = render_scaled_object(manifest, options=options)
    deployment = render_deployment(manifest, options)
    meta = trigger(scaled)["metadata"]
    assert meta["consumerGroup"] == manifest.group_id == f"bar-agent-{manifest.name}"
    assert meta["topic"] == manifest.task_topic and meta["topic"] in catalog
    assert f"consumer group {manifest.group_id}" in catalog.get(meta["topic"]).description
    assert scaled["spec"]["scaleTargetRef"] == {"name": deployment["metadata"]["name"]}
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    # KEDA measures the lag on the cluster the replicas consume from.
    assert meta["bootstrapServers"] == env["BAR_BOOTSTRAP_SERVERS"] == "kafka.prod:9093"


def test_max_replica_count_never_exceeds_the_task_topic_partitions(manifest: AgentManifest):
    partitions = default_catalog().get(manifest.task_topic).partitions
    assert partitions == AGENT_TASK_PARTITIONS
    assert render_scaled_object(manifest)["spec"]["maxReplicaCount"] <= partitions
    too_many = ScalingPolicy.model_validate({"maxReplicas": partitions + 1, "tasksPerAgent": 5})
    with pytest.raises(
        ConfigError, match=rf"exceeds the {partitions} partitions of {manifest.task_topic}"
    ):
        render_scaled_object(manifest, too_many)


def test_policy_sets_replica_bounds_cooldown_and_hpa_stabilization():
    scaled = render_scaled_object(MANIFESTS[0])["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 20)
    assert scaled["cooldownPeriod"] == 300
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {
        "scaleUp": {"stabilizationWindowSeconds": 60},
        "scaleDown": {"stabilizationWindowSeconds": 300},
    }
    # The longer of the scale-down cooldown and the stabilization window holds scale-downs.
    longer_window = ScalingPolicy.model_validate(
        {"tasksPerAgent": 5, "scaleDownCooldown": 120, "stabilizationWindow": 600}
    )
    spec = render_scaled_object(MANIFESTS[0], longer_window)["spec"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 600
    }
    assert spec["cooldownPeriod"] == 120


def test_policies_keda_cannot_express_are_refused_with_the_reason():
    worker = MANIFESTS[0]
    cpu_only = ScalingPolicy.model_validate({"targetCPU": 70})
    with pytest.raises(ConfigError, match="no tasksPerAgent"):
        render_scaled_object(worker, cpu_only)
    hours = ScalingPolicy.model_validate({"tasksPerAgent": 5, "scaleDownCooldown": 7200})
    with pytest.raises(ConfigError, match="at most 3600s"):
        render_scaled_object(worker, hours)


def test_deployment_runs_the_agent_from_its_mounted_manifest_with_its_resources(
    manifest: AgentManifest,
):
    deployment = render_deployment(manifest)
    assert deployment["metadata"]["name"] == f"bar-agent-{manifest.name}"
    assert "replicas" not in deployment["spec"]  # KEDA's HPA owns the count
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    [container] = pod["spec"]["containers"]
    assert container["image"] == "agent-buildkit:latest"
    assert container["command"] == [
        "python",
        "-m",
        "agents.runtime.serve",
        "--manifest",
        f"/etc/bar/agents/{manifest.name}.yaml",
    ]
    res = manifest.resources
    assert container["resources"]["requests"] == {"cpu": res.cpu, "memory": res.memory}
    if res.limits is not None:
        assert container["resources"]["limits"] == {
            "cpu": res.limits.cpu,
            "memory": res.limits.memory,
        }
    [mount] = container["volumeMounts"]
    [volume] = pod["spec"]["volumes"]
    assert mount["mountPath"] == "/etc/bar/agents" and mount["name"] == volume["name"]
    config_map = render_config_map(manifest)
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert parse_manifest(config_map["data"][f"{manifest.name}.yaml"]) == manifest
    replica_id = [e for e in container["env"] if e["name"] == "BAR_REPLICA_ID"]
    assert replica_id == [
        {"name": "BAR_REPLICA_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]


def test_committed_agent_manifests_equal_a_fresh_render(tmp_path: Path):
    write_agent_manifests(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(COMMITTED): p.read_text() for p in COMMITTED.rglob("*") if p.is_file()
    }
    hint = "strimzi/agents is stale: run python -m streams.swarm.keda"
    assert sorted(committed) == sorted(fresh), hint
    for path, text in fresh.items():
        assert committed[path] == text, f"{path}: {hint}"
    top = yaml.safe_load((COMMITTED / "kustomization.yaml").read_text())
    assert top["resources"] == sorted(m.name for m in MANIFESTS)
    for m in MANIFESTS:
        scaled = yaml.safe_load((COMMITTED / m.name / "scaledobject.yaml").read_text())
        assert trigger(scaled)["metadata"]["lagThreshold"] == "5"
        assert (
            "caps\n# replicas at the partition count"
            in (COMMITTED / m.name / "scaledobject.yaml").read_text()
        )


def test_writing_removes_generated_folders_of_agents_no_longer_shipped(tmp_path: Path):
    write_agent_manifests(tmp_path, MANIFESTS[:2])
    write_agent_manifests(tmp_path, MANIFESTS[1:2])
    assert not (tmp_path / MANIFESTS[0].name).exists()
    assert sorted(p.name for p in (tmp_path / MANIFESTS[1].name).iterdir()) == [
        "configmap.yaml",
        "deployment.yaml",
        "kustomization.yaml",
        "scaledobject.yaml",
    ]
    # A folder someone else wrote is not ours to delete.
    (tmp_path / "hand-written").mkdir()
    (tmp_path / "hand-written" / "kustomization.yaml").write_text("resources: []\n")
    write_agent_manifests(tmp_path, MANIFESTS[1:2])
    assert (tmp_path / "hand-written" / "kustomization.yaml").exists()

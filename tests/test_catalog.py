"""The topic catalog, ``topics apply`` and the Strimzi manifests that mirror it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from buildkit.catalog import Catalog, TopicSpec, default_catalog
from buildkit.contracts.events import AgentTask
from buildkit.errors import BuildKitError, UnknownTopic
from buildkit.manifests import kafka_topic, read_manifests, resource_name, write_manifests
from buildkit.topics import apply_topics, describe_topic

REPO = Path(__file__).parent.parent
CRD = Path(__file__).parents[2] / "shared/reference/strimzi/crds/043-Crd-kafkatopic.yaml"


def test_committed_manifests_agree_with_the_catalog():
    manifests = read_manifests(REPO / "strimzi/topics")
    catalog = default_catalog()
    assert sorted(manifests) == sorted(catalog.names())
    for spec in catalog:
        body = manifests[spec.name]
        assert body["apiVersion"] == "kafka.strimzi.io/v1" and body["kind"] == "KafkaTopic"
        assert body["spec"]["partitions"] == spec.partitions
        config = {k: str(v) for k, v in body["spec"]["config"].items()}
        assert {k: config[k] for k in spec.kafka_config()} == spec.kafka_config()
    kustomization = yaml.safe_load((REPO / "strimzi/topics/kustomization.yaml").read_text())
    assert len(kustomization["resources"]) == len(catalog)


def test_generated_manifests_only_use_fields_the_strimzi_crd_declares(tmp_path):
    crd = yaml.safe_load(CRD.read_text())
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    allowed = set(v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])
    write_manifests(default_catalog(), tmp_path)
    for topic, body in read_manifests(tmp_path).items():
        assert set(body["spec"]) <= allowed, topic
        assert body["spec"]["partitions"] >= 1 and body["spec"]["replicas"] >= 1


def test_manifests_folder_mirrors_the_catalog_exactly(tmp_path):
    (tmp_path / "bar.old.topic.yaml").write_text("kind: KafkaTopic\n")
    write_manifests(Catalog([TopicSpec("bar.only.one", AgentTask)]), tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == [
        "bar.only.one.yaml",
        "kustomization.yaml",
    ]


def test_invalid_kubernetes_names_get_a_topic_name_field():
    body = kafka_topic(TopicSpec("Bar_Tasks", AgentTask), cluster="c", replicas=3, min_insync=2)
    assert body["metadata"]["name"] == resource_name("Bar_Tasks") == "bar-tasks"
    assert body["spec"]["topicName"] == "Bar_Tasks"


def test_catalog_rejects_duplicates_and_suggests_close_names():
    with pytest.raises(ValueError, match="declared twice"):
        Catalog([TopicSpec("a", AgentTask), TopicSpec("a", AgentTask)])
    with pytest.raises(UnknownTopic, match=r"did you mean bar\.tasks\.results"):
        default_catalog().get("bar.task.results")


def test_apply_is_idempotent_and_repairs_config_drift(settings, prefix):
    spec = TopicSpec(f"{prefix}.applied", AgentTask, partitions=2)
    catalog = Catalog([spec])
    assert [c.kind for c in apply_topics(settings, catalog)] == ["created"]
    assert [c.kind for c in apply_topics(settings, catalog)] == ["unchanged"]
    drifted = Catalog([TopicSpec(spec.name, AgentTask, partitions=2, retention=None)])
    [change] = apply_topics(settings, drifted)
    assert (change.kind, change.detail) == ("config", "retention.ms=-1")
    desc = describe_topic(settings, spec.name, with_groups=False)
    assert len(desc.partitions) == 2 and desc.config.get("retention.ms") == "-1"
    assert [c.kind for c in apply_topics(settings, drifted)] == ["unchanged"]


def test_apply_never_lowers_partitions_and_names_the_topic(settings, prefix):
    name = f"{prefix}.wide"
    apply_topics(settings, Catalog([TopicSpec(name, AgentTask, partitions=3)]))
    with pytest.raises(
        BuildKitError, match=rf"{name} has 3 partitions .* declares 1.*cannot remove"
    ):
        apply_topics(settings, Catalog([TopicSpec(name, AgentTask, partitions=1)]))


def test_apply_grows_partitions_or_says_why_not(settings, prefix):
    name = f"{prefix}.grow"
    apply_topics(settings, Catalog([TopicSpec(name, AgentTask, partitions=1)]))
    try:
        changes = apply_topics(settings, Catalog([TopicSpec(name, AgentTask, partitions=2)]))
    except BuildKitError as exc:
        # The embedded Tansu has no CreatePartitions; the error must say so and name the topic.
        assert f"cannot grow topic {name} to 2 partitions" in str(exc)
        assert "not supported by broker" in str(exc)
    else:
        assert [c.kind for c in changes] == ["partitions"]
        assert len(describe_topic(settings, name, with_groups=False).partitions) == 2


def test_topics_cli_apply_list_describe(cli):
    applied = cli("topics", "apply")
    assert applied.returncode == 0, applied.stderr
    assert "bar.tasks.results" in applied.stdout
    listed = cli("topics", "list")
    assert (
        listed.returncode == 0 and "AgentResult" in listed.stdout and "missing" not in listed.stdout
    )
    described = cli("topics", "describe", "bar.agents.registry")
    assert described.returncode == 0, described.stderr
    assert "cleanup.policy=compact" in described.stdout

"""The QITS agents package: its public names, and the shipped manifests that run them."""

from __future__ import annotations

import pytest

import agents.qits
from agents.qits import QitsAgent
from agents.runtime.manifest import builtin_manifests_dir
from agents.runtime.serve import load_agent

EXPECTED_EXPORTS = [
    "ApiBuilderAgent",
    "ApiBuilderPolicy",
    "ApiFirstEnforcerAgent",
    "ApiFirstPolicy",
    "ArtifactError",
    "ArtifactStore",
    "DocSyncAgent",
    "DocSyncPolicy",
    "LocalArtifactStore",
    "PerformanceMonitorAgent",
    "PerformancePolicy",
    "QitsAgent",
    "QitsInput",
    "QitsPolicy",
    "QualityGateEnforcerAgent",
    "QualityGatePolicy",
    "SecurityAuditorAgent",
    "SecurityPolicy",
    "TestGeneratorAgent",
    "TestGeneratorPolicy",
]


def test_public_names_are_pinned():
    assert agents.qits.__all__ == EXPECTED_EXPORTS


@pytest.mark.parametrize(
    "name",
    [
        "api-first-enforcer",
        "test-generator",
        "api-builder",
        "quality-gate-enforcer",
        "security-auditor",
        "performance-monitor",
        "doc-sync",
    ],
)
def test_shipped_manifest_names_its_agent_and_a_valid_policy(name, tmp_path, monkeypatch):
    monkeypatch.setenv("BAR_DATA_DIR", str(tmp_path))
    agent = load_agent(builtin_manifests_dir() / f"{name}.yaml")
    assert isinstance(agent, QitsAgent) and agent.name == name
    assert agent.data_dir == tmp_path
    assert agent.policy == agent.policy_model.model_validate(agent.manifest.policy)


def test_invalid_manifest_policy_stops_the_agent_naming_the_field(tmp_path):
    from agents.qits import QualityGateEnforcerAgent
    from agents.qits.base import QitsPolicyError
    from agents.runtime.manifest import load_manifest

    manifest = load_manifest(builtin_manifests_dir() / "quality-gate-enforcer.yaml")
    bad = manifest.model_copy(update={"policy": {"max_mutant": 3}})
    with pytest.raises(QitsPolicyError, match=r'field "policy.max_mutant"'):
        QualityGateEnforcerAgent(bad, data_dir=tmp_path)


def test_invalid_policy_override_is_a_bad_policy_fault(tmp_path):
    from agents.qits import DocSyncAgent
    from tests.agents.qits.helpers import PETSTORE, dispatch

    result, _ = dispatch(DocSyncAgent(data_dir=tmp_path), "docs", spec=str(PETSTORE),
                         policy={"wiki": "sometimes"})  # fmt: skip
    assert result.error.code == "qits.bad_policy"
    assert '"policy.wiki"' in result.error.message

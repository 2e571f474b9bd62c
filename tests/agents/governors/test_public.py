"""The governors package: its public names, and the shipped manifests that run them."""

from __future__ import annotations

import pytest

import agents.governors
from agents.governors import BranchPolicyAgent, Governor, TddEnforcerAgent, VersionSyncAgent
from agents.runtime.manifest import builtin_manifests_dir, load_manifest
from agents.runtime.serve import load_agent

EXPECTED_EXPORTS = [
    "BranchPolicy",
    "BranchPolicyAgent",
    "Check",
    "Governor",
    "GovernorInput",
    "GovernorPolicy",
    "GovernorPolicyError",
    "Report",
    "TddEnforcerAgent",
    "TddPolicy",
    "VersionSyncAgent",
    "VersionSyncPolicy",
]


def test_public_names_are_pinned():
    assert agents.governors.__all__ == EXPECTED_EXPORTS


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("branch-policy", BranchPolicyAgent),
        ("version-sync", VersionSyncAgent),
        ("tdd-enforcer", TddEnforcerAgent),
    ],
)
def test_shipped_manifest_names_its_governor_and_a_valid_policy(name, cls):
    path = builtin_manifests_dir() / f"{name}.yaml"
    manifest = load_manifest(path)
    agent = load_agent(path)

    assert manifest.entrypoint == f"{cls.__module__}:{cls.__name__}"
    assert type(agent) is cls
    assert isinstance(agent, Governor)
    assert agent.name == name
    assert agent.status_name == f"bar/{name}"
    # Every field the manifest writes is one the policy model knows, with that value.
    assert manifest.policy
    assert agent.policy.model_dump(include=set(manifest.policy)) == {
        k: tuple(v) if isinstance(v, list) else v for k, v in manifest.policy.items()
    }

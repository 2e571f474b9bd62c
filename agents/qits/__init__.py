"""The QITS agents: the Feature Development Workflow's API-first pipeline on the runtime.

* :class:`ApiFirstEnforcerAgent` (``api-first-enforcer``): validates and lints the
  OpenAPI document, publishes it as ``openapi-spec.yaml``.
* :class:`TestGeneratorAgent` (``test-generator``): HTTP tests from the spec → ``tests/``.
* :class:`ApiBuilderAgent` (``api-builder``): a FastAPI implementation → ``src/``,
  checked against the generated tests.
* :class:`QualityGateEnforcerAgent` (``quality-gate-enforcer``): coverage, mutation
  score, vulnerabilities and lint of the build; the quality gate.
* :class:`SecurityAuditorAgent` (``security-auditor``): bandit and detect-secrets.
* :class:`PerformanceMonitorAgent` (``performance-monitor``): p99 and throughput under
  load, against thresholds and a stored baseline.
* :class:`DocSyncAgent` (``doc-sync``): Markdown API docs, published to the GitLab wiki.

Artifacts pass between them as references from an :class:`ArtifactStore` (see
:mod:`agents.qits.artifacts`); policies are the ``policy:`` mapping of each manifest
in ``agents/manifests``, validated by the agent's own model.
"""

from agents.qits.api_builder import ApiBuilderAgent, ApiBuilderPolicy
from agents.qits.api_first import ApiFirstEnforcerAgent, ApiFirstPolicy
from agents.qits.artifacts import ArtifactError, ArtifactStore, LocalArtifactStore
from agents.qits.base import QitsAgent, QitsPolicy
from agents.qits.doc_sync import DocSyncAgent, DocSyncPolicy
from agents.qits.inputs import QitsInput
from agents.qits.performance_monitor import PerformanceMonitorAgent, PerformancePolicy
from agents.qits.quality_gate import QualityGateEnforcerAgent, QualityGatePolicy
from agents.qits.security_auditor import SecurityAuditorAgent, SecurityPolicy
from agents.qits.test_generator import TestGeneratorAgent, TestGeneratorPolicy

__all__ = [
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

"""security-auditor, performance-monitor and doc-sync on a built petstore API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agents.qits import DocSyncAgent, PerformanceMonitorAgent, SecurityAuditorAgent
from buildkit.contracts.events import ActionKind, TaskStatus
from qits.apibuild import build_api
from tests.agents.qits.helpers import PETSTORE, USERS, dispatch, issue_event

FAST_PERF = {"requests": 300, "concurrency": 8, "warmup_requests": 20}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "src"
    build_api(PETSTORE, out)
    return out


def test_security_auditor_passes_the_generated_api(built, tmp_path):
    result, _ = dispatch(SecurityAuditorAgent(data_dir=tmp_path), "security", src=str(built))
    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert result.metrics["critical"] == 0
    assert "security-report.json" in result.outputs


def test_security_auditor_flags_a_planted_shell_command(built, tmp_path):
    planted = tmp_path / "src"
    shutil.copytree(built, planted)
    (planted / "admin.py").write_text(
        "import subprocess\n\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n"
    )
    result, ctx = dispatch(
        SecurityAuditorAgent(data_dir=tmp_path),
        "security",
        src=str(planted),
        workflow_inputs=issue_event("x"),
    )
    assert result.status is TaskStatus.FAILED
    assert result.error.code == "qits.security_critical"
    assert "B602" in result.error.message and "admin.py:5" in result.error.message
    (note,) = ctx.actions
    assert note.kind is ActionKind.ISSUE_NOTE and "CWE-78" in note.body


def test_performance_monitor_measures_and_stores_a_baseline(built, tmp_path):
    agent = PerformanceMonitorAgent(data_dir=tmp_path)
    result, _ = dispatch(
        agent, "performance", src=str(built), policy={**FAST_PERF, "throughput_rps": 1}
    )
    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert result.metrics["requests"] == 300 and result.metrics["errors"] == 0
    assert 0 < result.metrics["p50_ms"] <= result.metrics["p99_ms"]
    baseline = json.loads((tmp_path / "perf-baselines/QITS_Petstore.json").read_text())
    assert baseline["p99_ms"] == result.metrics["p99_ms"]


def test_performance_monitor_flags_a_regression_against_a_faster_baseline(built, tmp_path):
    baselines = tmp_path / "perf-baselines"
    baselines.mkdir()
    fast = {"p99_ms": 0.01, "p50_ms": 0.005, "throughput_rps": 1e9, "requests": 1, "errors": 0}
    (baselines / "project-7.json").write_text(json.dumps(fast))
    result, ctx = dispatch(
        PerformanceMonitorAgent(data_dir=tmp_path),
        "performance",
        src=str(built),
        workflow_inputs=issue_event("x"),
        policy={**FAST_PERF, "throughput_rps": 1},
    )
    assert result.status is TaskStatus.FAILED
    assert result.error.code == "qits.performance_regression"
    assert "regression: p99" in result.error.message
    assert "below the baseline 1e+09 req/s" in result.error.message
    assert json.loads((baselines / "project-7.json").read_text()) == fast  # not replaced
    assert "Performance" in ctx.actions[0].body


def test_performance_monitor_fails_when_the_manifest_throughput_is_missed(built, tmp_path):
    result, _ = dispatch(
        PerformanceMonitorAgent(data_dir=tmp_path),
        "performance",
        src=str(built),
        policy={**FAST_PERF, "throughput_rps": 1e9},
    )
    assert result.error.code == "qits.performance_threshold"
    assert "req/s (one uvicorn worker)" in result.error.message
    assert not (tmp_path / "perf-baselines").exists()


def test_performance_monitor_takes_its_thresholds_from_the_manifest(tmp_path):
    agent = PerformanceMonitorAgent(data_dir=tmp_path)
    assert agent.thresholds(agent.policy) == {"p99_ms": 1000.0, "throughput_rps": 1000.0}


def test_doc_sync_writes_markdown_and_asks_for_the_wiki_page(tmp_path):
    result, ctx = dispatch(
        DocSyncAgent(data_dir=tmp_path),
        "docs",
        workflow_inputs={**issue_event("x"), "spec": USERS.read_text()},
    )
    assert result.status is TaskStatus.SUCCEEDED, result.error
    doc = (tmp_path / "artifacts/run-1/docs/docs/api.md").read_text()
    (page,) = ctx.actions
    assert page.kind is ActionKind.WIKI_PAGE and page.project_id == 7
    assert page.title.startswith("API: ") and page.body == doc
    assert "## Operations" in doc and "**Responses**" in doc and "## Schemas" in doc
    assert "**Error codes**: " in doc


def test_doc_sync_without_a_project_only_writes_the_artifact(tmp_path):
    result, ctx = dispatch(DocSyncAgent(data_dir=tmp_path), "docs", spec=str(PETSTORE))
    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert ctx.actions == [] and "docs/api.md" in result.outputs
    assert result.metrics["operations"] == 5

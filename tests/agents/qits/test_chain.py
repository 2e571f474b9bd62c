"""The Feature Development Workflow's stages on the petstore spec, agent after agent:
api-design → test-generation → implementation → quality-gate, each reading the
artifacts the one before it wrote, as ROE wires them."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents.qits import (
    ApiBuilderAgent,
    ApiFirstEnforcerAgent,
    LocalArtifactStore,
    QualityGateEnforcerAgent,
    TestGeneratorAgent,
)
from buildkit.contracts.events import ActionKind, AgentResult, TaskStatus
from tests.agents.qits.helpers import PETSTORE, dispatch, issue_event

GATE_POLICY = {"max_mutants": 8, "mutation_workers": 2}


@dataclass
class Chain:
    data_dir: Path
    results: dict[str, AgentResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    actions: list = field(default_factory=list)

    def path(self, stage: str, name: str) -> Path:
        store = LocalArtifactStore(self.data_dir / "artifacts")
        return store.resolve(self.results[stage].outputs[name])


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    data = tmp_path_factory.mktemp("bar")
    run = Chain(data)
    workflow_inputs = issue_event(f"```yaml\n{PETSTORE.read_text()}```\n")
    stages = [
        ("api-design", ApiFirstEnforcerAgent(data_dir=data), [], {}),
        ("test-generation", TestGeneratorAgent(data_dir=data), ["openapi-spec.yaml"], {}),
        ("implementation", ApiBuilderAgent(data_dir=data), ["openapi-spec.yaml", "tests/"], {}),
        ("quality-gate", QualityGateEnforcerAgent(data_dir=data), [], {"policy": GATE_POLICY}),
    ]
    for stage, agent, wanted, params in stages:
        upstream = {k: v for r in run.results.values() for k, v in r.outputs.items()}
        inputs = {name: upstream[name] for name in wanted}
        if stage == "quality-gate":  # no inputs declared: direct parameters, as a person would
            params = {**params, "src": upstream["src/"], "tests": upstream["tests/"]}
        started = time.monotonic()
        result, ctx = dispatch(
            agent, stage, inputs=inputs, workflow_inputs=workflow_inputs, **params
        )
        run.seconds[stage] = round(time.monotonic() - started, 1)
        run.results[stage] = result
        run.actions += ctx.actions
        assert result.status is TaskStatus.SUCCEEDED, (stage, result.error)
    print("\nchain seconds per stage:", json.dumps(run.seconds))
    return run


def test_each_stage_writes_its_artifact_under_run_and_stage(chain):
    assert chain.path("api-design", "openapi-spec.yaml").name == "openapi-spec.yaml"
    tests = chain.path("test-generation", "tests/")
    assert tests == chain.data_dir / "artifacts/run-1/test-generation/tests"
    assert {"conftest.py", "test_pets.py"} <= {p.name for p in tests.iterdir()}
    assert (chain.path("implementation", "src/") / "app.py").exists()


def test_generator_and_builder_report_what_they_made(chain):
    generated = chain.results["test-generation"].metrics
    assert generated["operations"] == 5 and generated["tests"] >= 10
    assert generated["unsupported"] == 0
    built = chain.results["implementation"].metrics
    assert built["operations_implemented"] == 5 and built["stubs"] == 0
    assert built["tests_failed"] == 0 and built["tests_passed"] == generated["tests"] + 2


def test_quality_gate_passes_with_coverage_and_a_sampled_mutation_score(chain):
    metrics = chain.results["quality-gate"].metrics
    assert metrics["coverage"] >= 80
    assert metrics["coverage_all"] <= metrics["coverage"]
    assert metrics["mutants_sampled"] == 8 and metrics["mutants_planned"] > 8
    assert 0 <= metrics["mutation_score"] <= 100
    assert metrics["critical_vulnerabilities"] == 0
    assert metrics["phpcs_violations"] == 0
    assert metrics["tests_failed"] == 0 and metrics["tests_passed"] > 0


def test_stage_conditions_of_the_workflow_hold_on_the_gate_metrics(chain):
    from streams.roe.conditions import evaluate_all

    gate = evaluate_all(
        ["coverage >= 80%", "phpcs violations == 0"], chain.results["quality-gate"].metrics
    )
    assert gate.passed


def test_quality_gate_reports_on_the_issue(chain):
    (note,) = [a for a in chain.actions if a.requested_by == "quality-gate-enforcer"]
    assert note.kind is ActionKind.ISSUE_NOTE and note.target_iid == 12
    assert "Quality gate passed" in note.body and "Mutation: mutation score" in note.body


def test_quality_gate_fails_a_broken_implementation_with_a_clear_report(chain, tmp_path):
    broken = tmp_path / "src"
    shutil.copytree(chain.path("implementation", "src/"), broken)
    app = broken / "app.py"
    text = app.read_text()
    assert "status=201" in text
    app.write_text(text.replace("status=201", "status=200"))
    result, ctx = dispatch(
        QualityGateEnforcerAgent(data_dir=chain.data_dir),
        "quality-gate",
        run_id="run-broken",
        workflow_inputs=issue_event("x"),
        src=str(broken),
        tests=str(chain.path("test-generation", "tests/")),
        policy=GATE_POLICY,
    )
    assert result.status is TaskStatus.FAILED
    assert result.error.code == "qits.gate_failed"
    assert "tests_failed" in result.error.message
    assert "test_create_pet_succeeds" in result.error.message
    assert "mutation_score unknown" in result.error.message
    (note,) = ctx.actions
    assert "Quality gate failed" in note.body and "test_create_pet_succeeds" in note.body
    assert "Mutation testing not run: the tests fail." in note.body

"""The quality gate: the document's evaluateGate, check by check, boundaries included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from qits.gate import GateThresholds, evaluate_gate
from qits.quality_cli import evaluate_gate_command
from qits.security import Finding


def finding(severity: str) -> Finding:
    return Finding(
        tool="bandit",
        rule_id="B602",
        severity=severity,  # type: ignore[arg-type]
        confidence="high",
        file="app.py",
        line=1,
        message="shell=True",
        cwe="CWE-78",
        owasp="A03:2021-Injection",
    )


def verdicts(result) -> dict[str, bool]:
    return {c.name: c.passed for c in result.checks}


def test_documents_example_passes_with_default_thresholds():
    result = evaluate_gate(coverage=85, mutation_score=75, vulnerabilities=0)
    assert result.passed
    assert verdicts(result) == {
        "coverage": True,
        "mutation_score": True,
        "critical_vulnerabilities": True,
    }


def test_thresholds_are_met_at_equality():
    result = evaluate_gate(80, 75, 0)
    assert result.passed
    loose = GateThresholds(critical_vulnerabilities=2)
    assert evaluate_gate(80, 75, 2, loose).passed


@pytest.mark.parametrize(
    ("coverage", "score", "critical", "failing"),
    [
        (79.99, 90, 0, "coverage"),
        (90, 74.99, 0, "mutation_score"),
        (90, 90, 1, "critical_vulnerabilities"),
    ],
)
def test_each_check_fails_on_its_own(coverage, score, critical, failing):
    result = evaluate_gate(coverage, score, critical)
    assert not result.passed
    assert [c.name for c in result.failed] == [failing]


def test_findings_list_counts_only_critical_ones():
    findings = [finding("high"), finding("medium"), finding("low")]
    assert evaluate_gate(90, 90, findings).passed
    result = evaluate_gate(90, 90, [*findings, finding("critical")])
    assert not result.passed
    assert result.checks[2].actual == 1


def test_unknown_mutation_score_fails_its_check():
    result = evaluate_gate(90, None, 0)
    assert verdicts(result)["mutation_score"] is False


def test_custom_thresholds_and_validation():
    strict = GateThresholds(coverage=95, mutation_score=90)
    assert not evaluate_gate(90, 95, 0, strict).passed
    with pytest.raises(ValidationError):
        GateThresholds(coverage=120)
    with pytest.raises(ValidationError):
        GateThresholds(typo=1)  # type: ignore[call-arg]


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(evaluate_gate_command)
    return app


def test_cli_exit_code_follows_the_gate():
    ok = CliRunner().invoke(
        cli(), ["--coverage", "85", "--mutation-score", "75", "--critical", "0"]
    )
    assert ok.exit_code == 0, ok.output
    assert "gate passed" in ok.stdout
    bad = CliRunner().invoke(
        cli(), ["--coverage", "85", "--mutation-score", "75", "--critical", "1", "--json"]
    )
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["passed"] is False


def test_cli_reads_the_other_commands_json_reports(tmp_path: Path):
    (tmp_path / "cov.json").write_text(json.dumps({"percent": 81.5}))
    (tmp_path / "mut.json").write_text(json.dumps({"score": 76.0}))
    (tmp_path / "sec.json").write_text(json.dumps({"counts": {"critical": 0, "high": 3}}))
    result = CliRunner().invoke(
        cli(),
        [
            "--coverage-report",
            str(tmp_path / "cov.json"),
            "--mutation-report",
            str(tmp_path / "mut.json"),
            "--security-report",
            str(tmp_path / "sec.json"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    actual = {c["name"]: c["actual"] for c in json.loads(result.stdout)["checks"]}
    assert actual == {"coverage": 81.5, "mutation_score": 76.0, "critical_vulnerabilities": 0}


def test_cli_names_a_missing_report(tmp_path: Path):
    result = CliRunner().invoke(
        cli(),
        [
            "--coverage-report",
            str(tmp_path / "cov.json"),
            "--mutation-score",
            "80",
            "--critical",
            "0",
        ],
    )
    assert result.exit_code == 1
    assert "cov.json" in result.output

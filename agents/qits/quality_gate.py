"""quality-gate-enforcer: the built API against its generated tests, measured.

For the ``src/`` and ``tests/`` artifacts of the run:

1. **Tests under coverage**: the app is served under coverage.py
   (:func:`qits.coverage.serve_under_coverage`) and the generated HTTP tests run
   against it. ``coverage`` is the line coverage of the *generated* code — every
   file but those in policy ``coverage_omit`` (default ``_runtime.py``, the generic
   helper library the builder copies verbatim, which has its own tests in
   ``tests/qits``); ``coverage_all`` includes it.
2. **Mutation testing** of ``app.py`` (policy ``mutate``) with the HTTP tests, at
   most ``max_mutants`` mutants, sampled deterministically
   (:mod:`agents.qits.mutants`).
3. **Security scan** of ``src/`` (:func:`qits.security.security_scan`).
4. **Lint**: ``phpcs violations`` keeps the name of the architecture document's
   workflow condition (written for PHP); for our Python build it is the number of
   ``ruff check`` findings in ``src/`` with ruff's default rules (``E4 E7 E9 F``,
   policy ``lint_select``), ruff run isolated from any project configuration.

Metrics (ROE evaluates the stage's ``conditions`` on them): ``coverage``,
``coverage_all``, ``mutation_score`` (absent when no score could be computed),
``mutants_planned``, ``mutants_sampled``, ``mutants_survived``,
``critical_vulnerabilities``, ``vulnerabilities``, ``phpcs_violations``,
``tests_passed``, ``tests_failed``, ``tests_skipped``. The agent also applies
:func:`qits.gate.evaluate_gate` with its policy thresholds plus "no failing test"
and "lint at most ``max_lint_violations``"; any failed check is a
``qits.gate_failed`` fault. The report is the ``quality-report.json`` artifact and,
when a GitLab issue started the run, a note on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from agents.qits.api_builder import SRC_ARTIFACT
from agents.qits.base import QitsAgent, QitsPolicy
from agents.qits.inputs import QitsInput
from agents.qits.mutants import run_http_mutation
from agents.qits.serving import BUILT_API_CREDENTIALS, TestRun, run_http_tests
from agents.qits.test_generator import TESTS_ARTIFACT
from agents.runtime.agent import AgentFault, TaskOutcome
from qits.coverage import CoverageReport, serve_under_coverage
from qits.gate import Check, GateThresholds, evaluate_gate
from qits.mutation import MutationReport
from qits.security import SecurityReport, security_scan

__all__ = [
    "GATE_FAILED",
    "REPORT_ARTIFACT",
    "QualityGateEnforcerAgent",
    "QualityGatePolicy",
    "lint_violations",
]

GATE_FAILED = "qits.gate_failed"
REPORT_ARTIFACT = "quality-report.json"


class QualityGatePolicy(QitsPolicy):
    """Thresholds and effort of the quality gate."""

    coverage_threshold: float = Field(default=80, ge=0, le=100)
    mutation_threshold: float = Field(default=75, ge=0, le=100)
    max_critical: int = Field(default=0, ge=0)
    max_lint_violations: int = Field(default=0, ge=0)
    #: Most mutants tried; 0 skips mutation testing (and so fails the mutation check).
    max_mutants: int = Field(default=30, ge=0)
    mutation_workers: int = Field(default=2, ge=1)
    #: Files of ``src/`` that are mutated.
    mutate: list[str] = Field(default_factory=lambda: ["app.py"])
    #: Files of ``src/`` left out of ``coverage`` (still in ``coverage_all``).
    coverage_omit: list[str] = Field(default_factory=lambda: ["_runtime.py"])
    lint_select: list[str] = Field(default_factory=lambda: ["E4", "E7", "E9", "F"])
    test_timeout_s: float = Field(default=300, gt=0)


class QualityGateEnforcerAgent(QitsAgent[QualityGatePolicy]):
    """Measures the built API (coverage, mutation score, vulnerabilities, lint) and
    enforces the quality gate."""

    manifest_file: ClassVar[str] = "quality-gate-enforcer"
    policy_model = QualityGatePolicy

    def run(self, inp: QitsInput, policy: QualityGatePolicy) -> TaskOutcome:
        """See the module docstring."""
        src = inp.artifact(SRC_ARTIFACT, self.store, inp.src)
        tests = inp.artifact(TESTS_ARTIFACT, self.store, inp.tests)
        with serve_under_coverage(src, "app:app") as server:
            run = run_http_tests(
                tests,
                server.base_url,
                timeout_s=policy.test_timeout_s,
                env=BUILT_API_CREDENTIALS,
            )
        assert server.report is not None  # set when the block ends
        coverage = _percent(server.report, set(policy.coverage_omit))
        mutation = (
            run_http_mutation(
                src,
                tests,
                files=policy.mutate,
                max_mutants=policy.max_mutants,
                workers=policy.mutation_workers,
            )
            if policy.max_mutants and run.ok
            else None
        )
        score = mutation.score if mutation else None
        security = security_scan([src], severity="low")
        lint = lint_violations(src, policy.lint_select)
        gate = evaluate_gate(
            coverage,
            score,
            security.findings,
            GateThresholds(
                coverage=policy.coverage_threshold,
                mutation_score=policy.mutation_threshold,
                critical_vulnerabilities=policy.max_critical,
            ),
        )
        checks = [
            Check(name="tests_failed", actual=run.failed if run.exit_code in (0, 1) else None,
                  threshold=0, comparison="<=", passed=run.ok),
            *gate.checks,
            Check(name="phpcs_violations", actual=len(lint), threshold=policy.max_lint_violations,
                  comparison="<=", passed=len(lint) <= policy.max_lint_violations),
        ]  # fmt: skip
        metrics = {
            "coverage": coverage,
            "coverage_all": server.report.percent,
            "critical_vulnerabilities": float(security.critical),
            "vulnerabilities": float(len(security.findings)),
            "phpcs_violations": float(len(lint)),
            "tests_passed": float(run.passed),
            "tests_failed": float(run.failed),
            "tests_skipped": float(run.skipped),
        }
        if mutation is not None:
            metrics["mutants_planned"] = float(mutation.planned)
            metrics["mutants_sampled"] = float(mutation.sampled)
            metrics["mutants_survived"] = float(mutation.survived)
            if score is not None:
                metrics["mutation_score"] = score
        failed = [c for c in checks if not c.passed]
        body = _markdown(checks, run, mutation, security, lint, policy)
        out = self.output(inp, REPORT_ARTIFACT)
        out.write_text(
            json.dumps(
                {
                    "passed": not failed,
                    "checks": [c.model_dump() for c in checks],
                    "metrics": metrics,
                    "test_failures": run.failures,
                    "mutation": mutation.model_dump(mode="json") if mutation else None,
                    "security": security.model_dump(mode="json"),
                    "lint": lint,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        actions = inp.note(body) if policy.notes else []
        if failed:
            reasons = "; ".join(_describe(c) for c in failed)
            extra = f" — failing: {'; '.join(run.failures[:5])}" if run.failures else ""
            raise AgentFault(GATE_FAILED, f"quality gate failed: {reasons}{extra}", actions=actions)
        return TaskOutcome(
            metrics=metrics,
            outputs={REPORT_ARTIFACT: self.store.reference(out)},
            actions=actions,
        )


def lint_violations(src: Path, select: list[str]) -> list[str]:
    """``file:line: CODE message`` per ruff finding in ``src`` (isolated from any config)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache",
         "--select", ",".join(select), "--output-format", "json", str(src)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    try:
        found = json.loads(proc.stdout or "[]")
    except ValueError as exc:
        raise AgentFault("qits.lint_failed", f"ruff did not answer JSON: {proc.stderr}") from exc
    return [
        f"{Path(f['filename']).name}:{f['location']['row']}: {f['code']} {f['message']}"
        for f in found
    ]


def _percent(report: CoverageReport, omit: set[str]) -> float:
    files = [f for f in report.files if f.file not in omit]
    statements = sum(f.statements for f in files)
    return round(sum(f.covered for f in files) * 100 / statements, 2) if statements else 0.0


def _describe(check: Check) -> str:
    actual = "unknown" if check.actual is None else f"{check.actual:g}"
    return f"{check.name} {actual} (needs {check.comparison} {check.threshold:g})"


def _markdown(
    checks: list[Check],
    run: TestRun,
    mutation: MutationReport | None,
    security: SecurityReport,
    lint: list[str],
    policy: QualityGatePolicy,
) -> str:
    passed = all(c.passed for c in checks)
    lines = [
        f"### {':white_check_mark:' if passed else ':x:'} Quality gate "
        f"{'passed' if passed else 'failed'}",
        "",
        "| Check | Actual | Required | |",
        "|---|---|---|---|",
    ]
    for c in checks:
        actual = "—" if c.actual is None else f"{c.actual:g}"
        mark = ":white_check_mark:" if c.passed else ":x:"
        lines.append(f"| {c.name} | {actual} | {c.comparison} {c.threshold:g} | {mark} |")
    lines += ["", f"Tests: {run.passed} passed, {run.failed} failed, {run.skipped} skipped."]
    for failure in run.failures[:10]:
        lines.append(f"- `{failure}`")
    if mutation is None:
        why = "mutation testing is off" if not policy.max_mutants else "the tests fail"
        lines += ["", f"Mutation testing not run: {why}."]
    else:
        lines += [
            "",
            f"Mutation: {mutation.summary} (sampled {mutation.sampled} of "
            f"{mutation.planned} planned in {', '.join(policy.mutate)}).",
        ]
        for m in mutation.survivors[:10]:
            lines.append(f"- survived: `{m.file}:{m.line}` `{m.change}`")
    lines += ["", f"Security: {len(security.findings)} finding(s), {security.critical} critical."]
    for f in security.findings[:10]:
        lines.append(f"- {f.severity}: `{Path(f.file).name}:{f.line}` {f.rule_id} {f.message}")
    if lint:
        lines += ["", f"Lint (ruff {' '.join(policy.lint_select)}):"]
        lines += [f"- `{v}`" for v in lint[:10]]
    return "\n".join(lines) + "\n"

"""security-auditor: bandit and detect-secrets over the built API (:mod:`qits.security`).

Scans the ``src/`` artifact, or the ``checkout`` parameter (a directory) when given.
Findings of policy ``min_severity`` or worse are kept, each with its CWE and OWASP
Top 10 category, in the ``security-report.json`` artifact.

Metrics: ``critical``, ``high``, ``medium``, ``low`` (counts), ``findings``.
Fault ``qits.security_critical`` when critical findings exceed ``max_critical``
(default 0) or, if set, high ones exceed ``max_high``. When a GitLab issue started
the run, findings are posted as a note on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from agents.qits.api_builder import SRC_ARTIFACT
from agents.qits.base import QitsAgent, QitsPolicy, fault_from
from agents.qits.inputs import QitsInput
from agents.runtime.agent import AgentFault, TaskOutcome
from qits.errors import QualityToolError
from qits.security import SEVERITIES, Finding, SecurityReport, Severity, security_scan

__all__ = ["SECURITY_CRITICAL", "SecurityAuditorAgent", "SecurityPolicy"]

SECURITY_CRITICAL = "qits.security_critical"
REPORT_ARTIFACT = "security-report.json"


class SecurityPolicy(QitsPolicy):
    """What the security-auditor reports and what fails it."""

    min_severity: Severity = "low"
    max_critical: int = Field(default=0, ge=0)
    #: Most high findings allowed; None: high findings never fail the task.
    max_high: int | None = Field(default=None, ge=0)


class SecurityAuditorAgent(QitsAgent[SecurityPolicy]):
    """Scans the built API (or a checkout) for OWASP Top 10 weaknesses and secrets."""

    manifest_file: ClassVar[str] = "security-auditor"
    policy_model = SecurityPolicy

    def run(self, inp: QitsInput, policy: SecurityPolicy) -> TaskOutcome:
        """See the module docstring."""
        target = (
            Path(inp.checkout) if inp.checkout else inp.artifact(SRC_ARTIFACT, self.store, inp.src)
        )
        try:
            report = security_scan([target], severity=policy.min_severity)
        except QualityToolError as exc:
            raise fault_from(exc, "qits.scanner_failed") from exc
        out = self.output(inp, REPORT_ARTIFACT)
        out.write_text(report.model_dump_json(indent=2), encoding="utf-8")
        metrics: dict[str, float] = {s: float(report.counts.get(s, 0)) for s in SEVERITIES}
        metrics["findings"] = float(len(report.findings))
        problems = []
        if report.critical > policy.max_critical:
            problems.append(
                f"{report.critical} critical finding(s) (at most {policy.max_critical})"
            )
        high = report.counts.get("high", 0)
        if policy.max_high is not None and high > policy.max_high:
            problems.append(f"{high} high finding(s) (at most {policy.max_high})")
        actions = inp.note(_markdown(report, problems)) if policy.notes and report.findings else []
        if problems:
            worst = "; ".join(_line(f) for f in report.findings[:5])
            raise AgentFault(
                SECURITY_CRITICAL,
                f"security audit of {target} failed: {', '.join(problems)}: {worst}",
                actions=actions,
            )
        return TaskOutcome(
            metrics=metrics, outputs={REPORT_ARTIFACT: self.store.reference(out)}, actions=actions
        )


def _line(f: Finding) -> str:
    where = f"{Path(f.file).name}:{f.line}"
    return f"{f.severity} {f.rule_id} at {where}: {f.message} ({f.cwe or 'no CWE'})"


def _markdown(report: SecurityReport, problems: list[str]) -> str:
    head = ":x: Security audit failed" if problems else ":warning: Security audit findings"
    counts = ", ".join(f"{report.counts.get(s, 0)} {s}" for s in reversed(SEVERITIES))
    rows = [
        f"| {f.severity} | `{Path(f.file).name}:{f.line}` | {f.rule_id} | {f.cwe or ''} | "
        f"{f.owasp or ''} | {f.message.replace('|', '/')} |"
        for f in report.findings[:20]
    ]
    return (
        f"### {head}\n\n{counts}.\n\n| Severity | Where | Rule | CWE | OWASP | Finding |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )

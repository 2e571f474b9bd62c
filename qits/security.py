"""Security scan: bandit and detect-secrets findings, each with its CWE and OWASP category.

``security_scan(targets, severity="medium")`` runs bandit (``python -m bandit -f
json``, in a subprocess so a crash in a plugin cannot take the caller down) and
detect-secrets (its ``SecretsCollection`` API with the default plugins and
filters) over the targets and returns one list of :class:`Finding`.

Severity (our four levels, ``low < medium < high < critical``):

* bandit: its severity, lower-cased, except that **HIGH severity with HIGH
  confidence is critical** — bandit is sure and the impact is high (e.g.
  ``subprocess.call(cmd, shell=True)``, MD5 for security). A HIGH with lower
  confidence stays high.
* detect-secrets: a secret matched by a **format** (AWS key, private key, GitHub,
  Slack, Stripe … tokens) is **critical** with high confidence: a working
  credential in the code is usable by anyone who reads it. One found by a
  heuristic — a keyword like ``password =``, or a high-entropy string — is
  **high** with medium/low confidence, since these are often test values.

CWE: bandit's ``issue_cwe``; secrets are CWE-798 (Use of Hard-coded Credentials).
OWASP: :mod:`qits.owasp` (OWASP's own CWE lists per Top 10:2021 category).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from qits.errors import PathNotFound, ScannerFailed
from qits.owasp import owasp_category

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
Confidence = Literal["low", "medium", "high"]

SECRET_CWE = 798
# detect-secrets types found by a heuristic rather than a known credential format.
_HEURISTIC_SECRETS: dict[str, Confidence] = {
    "Secret Keyword": "medium",
    "Base64 High Entropy String": "low",
    "Hex High Entropy String": "low",
}
_SKIP_DIRS = {
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
}
_MAX_FILE_BYTES = 1_000_000


def severity_rank(severity: Severity) -> int:
    """0 for low … 3 for critical, for comparisons."""
    return SEVERITIES.index(severity)


class Finding(BaseModel):
    """One security finding of bandit or detect-secrets."""

    tool: Literal["bandit", "detect-secrets"]
    rule_id: str = Field(description='bandit test id ("B602") or detect-secrets type')
    severity: Severity
    confidence: Confidence
    file: str
    line: int
    message: str
    cwe: str | None = Field(description='"CWE-78"; None when the tool gives none')
    owasp: str | None = Field(description='"A03:2021-Injection"; None when OWASP maps none')
    more_info: str | None = None


class SecurityReport(BaseModel):
    """Findings at or above ``min_severity``, with counts per severity."""

    targets: list[str]
    min_severity: Severity
    findings: list[Finding]
    counts: dict[Severity, int]
    errors: list[str] = Field(default_factory=list, description="files a scanner could not read")

    @property
    def critical(self) -> int:
        """How many critical findings — the number the quality gate checks."""
        return self.counts.get("critical", 0)

    def at_or_above(self, severity: Severity) -> list[Finding]:
        """The findings of ``severity`` or worse."""
        return [f for f in self.findings if severity_rank(f.severity) >= severity_rank(severity)]


def _cwe(cwe_id: int | None) -> str | None:
    return f"CWE-{cwe_id}" if cwe_id else None


def bandit_severity(severity: str, confidence: str) -> Severity:
    """Our severity for a bandit issue; see the module docstring."""
    sev, conf = severity.lower(), confidence.lower()
    if sev == "high" and conf == "high":
        return "critical"
    if sev in ("low", "medium", "high"):
        return sev  # type: ignore[return-value]
    return "low"


def run_bandit(
    targets: Sequence[Path], python: str | None = None
) -> tuple[list[Finding], list[str]]:
    """bandit's findings over ``targets`` (recursively), and its per-file errors."""
    excludes = ",".join(f"*/{d}/*" for d in sorted(_SKIP_DIRS))
    cmd = [python or sys.executable, "-m", "bandit", "-f", "json", "-q", "-r", "-x", excludes]
    proc = subprocess.run(
        [*cmd, *(str(t) for t in targets)], capture_output=True, text=True, check=False
    )
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise ScannerFailed(
            f"bandit exited {proc.returncode} without a JSON report: {proc.stderr.strip()[-500:]}"
        ) from exc
    findings = []
    for issue in data.get("results", []):
        cwe_id = (issue.get("issue_cwe") or {}).get("id") or None
        findings.append(
            Finding(
                tool="bandit",
                rule_id=issue["test_id"],
                severity=bandit_severity(issue["issue_severity"], issue["issue_confidence"]),
                confidence=issue["issue_confidence"].lower()
                if issue["issue_confidence"].lower() in ("low", "medium", "high")
                else "low",
                file=issue["filename"],
                line=issue["line_number"],
                message=f"{issue['test_name']}: {issue['issue_text']}",
                cwe=_cwe(cwe_id),
                owasp=owasp_category(cwe_id),
                more_info=issue.get("more_info"),
            )
        )
    errors = [f"{e.get('filename')}: {e.get('reason')}" for e in data.get("errors", [])]
    return findings, errors


def _files(targets: Sequence[Path]) -> Iterable[Path]:
    for target in targets:
        if target.is_file():
            yield target
            continue
        for root, dirs, files in os.walk(target):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            for name in sorted(files):
                path = Path(root) / name
                if path.stat().st_size <= _MAX_FILE_BYTES:
                    yield path


def run_detect_secrets(targets: Sequence[Path]) -> list[Finding]:
    """detect-secrets' findings over the files under ``targets``, default plugins and filters."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    secrets = SecretsCollection()
    with default_settings():
        for path in _files(targets):
            secrets.scan_file(str(path))
    findings = []
    for filename, secret in secrets:
        heuristic = _HEURISTIC_SECRETS.get(secret.type)
        findings.append(
            Finding(
                tool="detect-secrets",
                rule_id=secret.type,
                severity="high" if heuristic else "critical",
                confidence=heuristic or "high",
                file=filename,
                line=secret.line_number,
                message=f"hard-coded secret: {secret.type}",
                cwe=_cwe(SECRET_CWE),
                owasp=owasp_category(SECRET_CWE),
            )
        )
    return findings


def security_scan(
    targets: Sequence[Path | str], severity: Severity = "low", python: str | None = None
) -> SecurityReport:
    """Scan ``targets`` (files or directories) with bandit and detect-secrets.

    Only findings of ``severity`` or worse are kept (``"medium"`` keeps medium,
    high and critical). ``python`` is the interpreter bandit is installed in.
    """
    paths = [Path(t).resolve() for t in targets]
    if not paths:
        raise PathNotFound("target", "(none given)")
    for path in paths:
        if not path.exists():
            raise PathNotFound("scan target", path)
    bandit_findings, errors = run_bandit(paths, python)
    everything = bandit_findings + run_detect_secrets(paths)
    kept = sorted(
        (f for f in everything if severity_rank(f.severity) >= severity_rank(severity)),
        key=lambda f: (-severity_rank(f.severity), f.file, f.line, f.rule_id),
    )
    counts: dict[Severity, int] = {s: 0 for s in SEVERITIES}
    for finding in kept:
        counts[finding.severity] += 1
    return SecurityReport(
        targets=[str(p) for p in paths],
        min_severity=severity,
        findings=kept,
        counts=counts,
        errors=errors,
    )

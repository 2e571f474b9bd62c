"""The quality gate: the document's ``qits.evaluateGate``.

``evaluate_gate(coverage=85, mutation_score=75, vulnerabilities=0)`` passes iff
all three checks pass:

* coverage (percent) ``>=`` its threshold (default 80),
* mutation score (percent) ``>=`` its threshold (default 75),
* critical vulnerabilities ``<=`` the allowed count (default 0).

As in the document, ``vulnerabilities`` is the *count of critical findings*; a
list of :class:`~qits.security.Finding` is accepted too and its critical ones are
counted. Equality passes (80 % coverage meets an 80 % threshold). A missing
mutation score (the baseline failed, or there was nothing to mutate) fails its
check: an unknown score is not a passing one.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from qits.security import Finding


class GateThresholds(BaseModel):
    """What the gate requires; the defaults are the document's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    coverage: float = Field(default=80, ge=0, le=100, description="minimum coverage percent")
    mutation_score: float = Field(default=75, ge=0, le=100, description="minimum mutation score")
    critical_vulnerabilities: int = Field(default=0, ge=0, description="most critical findings")


class Check(BaseModel):
    """One check of the gate."""

    name: str
    actual: float | None
    threshold: float
    comparison: str = Field(description='">=" or "<=": how actual must compare to threshold')
    passed: bool


class GateResult(BaseModel):
    """Passed iff every check passed."""

    passed: bool
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]


def critical_count(vulnerabilities: int | Sequence[Finding]) -> int:
    """The number of critical vulnerabilities: the int itself, or the critical findings."""
    if isinstance(vulnerabilities, int):
        return vulnerabilities
    return sum(1 for f in vulnerabilities if f.severity == "critical")


def evaluate_gate(
    coverage: float,
    mutation_score: float | None,
    vulnerabilities: int | Sequence[Finding],
    thresholds: GateThresholds | None = None,
) -> GateResult:
    """Evaluate the quality gate; see the module docstring for the semantics."""
    t = thresholds or GateThresholds()
    critical = critical_count(vulnerabilities)
    checks = [
        Check(
            name="coverage",
            actual=coverage,
            threshold=t.coverage,
            comparison=">=",
            passed=coverage >= t.coverage,
        ),
        Check(
            name="mutation_score",
            actual=mutation_score,
            threshold=t.mutation_score,
            comparison=">=",
            passed=mutation_score is not None and mutation_score >= t.mutation_score,
        ),
        Check(
            name="critical_vulnerabilities",
            actual=critical,
            threshold=t.critical_vulnerabilities,
            comparison="<=",
            passed=critical <= t.critical_vulnerabilities,
        ),
    ]
    return GateResult(passed=all(c.passed for c in checks), checks=checks)

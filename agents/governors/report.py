"""A governor's findings, and the readable forms they take on GitLab.

A :class:`Report` is a list of :class:`Check` results: what was checked, whether it
passed, failed or was skipped (and why), and for a failure how to fix it. From it
come the merge request note (Markdown a developer can act on), the one-line commit
status description, and the JSON kept as the task's ``report`` output.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Check", "Report"]

_ICONS = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}
# GitLab cuts a commit status description at 255 characters.
_STATUS_MAX = 255


class Check(BaseModel):
    """One rule applied once: ``detail`` says what was seen, ``fix`` what to do about a
    failure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str
    status: Literal["passed", "failed", "skipped"]
    detail: str
    fix: str | None = None


class Report(BaseModel):
    """Everything one governor run found."""

    model_config = ConfigDict(extra="forbid")

    governor: str
    #: What was checked, as Markdown: ``merge request !3 (`a` → `b`)``.
    subject: str
    sha: str | None = None
    checks: list[Check] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)

    def add(self, rule: str, ok: bool, detail: str, fix: str | None = None) -> Check:
        """Record a passed (``ok``) or failed check; ``fix`` is kept for failures only."""
        check = Check(
            rule=rule,
            status="passed" if ok else "failed",
            detail=detail,
            fix=None if ok else fix,
        )
        self.checks.append(check)
        return check

    def skip(self, rule: str, why: str) -> Check:
        """Record a check that could not apply, and why."""
        check = Check(rule=rule, status="skipped", detail=why)
        self.checks.append(check)
        return check

    @property
    def violations(self) -> list[Check]:
        """The failed checks."""
        return [c for c in self.checks if c.status == "failed"]

    def summary(self) -> str:
        """One line: ``passed (3 checks)`` or ``2 violation(s): branch name; issue reference``."""
        failed = self.violations
        if not failed:
            ran = sum(c.status == "passed" for c in self.checks)
            return f"passed ({ran} check{'s' if ran != 1 else ''})"
        return f"{len(failed)} violation(s): " + "; ".join(f"{c.rule}: {c.detail}" for c in failed)

    def status_description(self) -> str:
        """:meth:`summary` cut to what a GitLab commit status holds."""
        text = self.summary()
        return text if len(text) <= _STATUS_MAX else text[: _STATUS_MAX - 1] + "…"

    def markdown(self) -> str:
        """The note: a verdict, what was checked, and for each failure how to fix it."""
        failed = self.violations
        verdict = (
            f"❌ **{self.governor}**: {len(failed)} violation{'s' if len(failed) != 1 else ''}"
            if failed
            else f"✅ **{self.governor}**: passed"
        )
        at = f" at `{self.sha[:8]}`" if self.sha else ""
        lines = [f"### {verdict}", "", f"Checked {self.subject}{at}.", ""]
        lines += ["| | Check | Result |", "|---|---|---|"]
        lines += [f"| {_ICONS[c.status]} | {c.rule} | {_cell(c.detail)} |" for c in self.checks]
        if failed:
            lines += ["", "#### How to fix", ""]
            lines += [f"{n}. **{c.rule}**: {c.fix or c.detail}" for n, c in enumerate(failed, 1)]
        if self.metrics:
            shown = ", ".join(f"{k} {_number(v)}" for k, v in sorted(self.metrics.items()))
            lines += ["", f"<sub>{shown}</sub>"]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        """The report as compact JSON (the task's ``report`` output)."""
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"), sort_keys=True)


def _cell(text: str) -> str:
    """``text`` fit for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", "<br>")


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))

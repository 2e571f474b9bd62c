"""The ROE part of ``make demo``: a GitLab event starts the feature workflow, which runs."""

from __future__ import annotations

import io

from rich.console import Console

from streams.roe.demo import run_roe_demo


def test_gitlab_issue_starts_the_feature_workflow_and_it_runs_stage_by_stage(settings):
    output = io.StringIO()
    ok = run_roe_demo(settings, Console(file=output, width=200))
    text = output.getvalue()
    assert ok, text
    positions = [
        text.index(f"STAGE_SUCCEEDED      {stage}")
        for stage in ("api-design", "test-generation", "implementation", "quality-gate")
    ]
    assert positions == sorted(positions)
    assert "WORKFLOW_STARTED" in text and "WORKFLOW_SUCCEEDED" in text
    assert "simulated" in text

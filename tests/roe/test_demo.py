"""The ROE part of ``make demo``: GitLab deliveries over HTTP start the Feature
Development Workflow, which the QITS agents run through its quality gate, and merge
request governance, whose governors pass one request and refuse the other."""

from __future__ import annotations

import io
import re
import threading

from rich.console import Console

from buildkit.audit.archiver import run_archiver
from buildkit.catalog import default_catalog
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from connectors.gitlab.stack import webhook_url
from streams.roe.demo import run_roe_demo
from streams.roe.demo_gitlab import GitLabDeliveryError


def test_gitlab_deliveries_start_the_workflows_and_the_feature_passes_its_gate(
    settings: Settings, gitlab_webhook: str
) -> None:
    assert webhook_url(settings) == gitlab_webhook
    apply_topics(settings, default_catalog())
    stop = threading.Event()
    archiver = threading.Thread(
        target=run_archiver, args=(settings, default_catalog()), kwargs={"stop": stop}, daemon=True
    )
    archiver.start()
    output = io.StringIO()
    try:
        ok = run_roe_demo(settings, Console(file=output, width=220))
    finally:
        stop.set()
        archiver.join(30)
    text = output.getvalue()
    assert ok, text
    assert "POST Issue Hook: issue #123 opened" in text
    positions = [
        text.index(f"STAGE_SUCCEEDED      {stage}")
        for stage in ("api-design", "test-generation", "implementation", "quality-gate")
    ]
    assert positions == sorted(positions)
    assert "WORKFLOW_STARTED" in text and "WORKFLOW_SUCCEEDED" in text
    assert "simulated" not in text
    coverage = re.search(r"│ coverage\s+│ ([\d.]+)%", text)
    assert coverage is not None and float(coverage.group(1)) >= 80, text
    assert re.search(r"│ mutation score\s+│ [\d.]+%", text), text
    assert re.search(r"│ critical vulnerabilities\s+│ 0 ", text), text
    replayed = re.search(r"replayed from the audit archive: (\d+) of (\d+) event", text)
    assert replayed is not None and replayed.group(1) == replayed.group(2), text
    assert text.count("(as expected)") == 3
    assert "STAGE_FAILED         branch-policy" in text
    assert "quick-fix` matches none of the allowed patterns" in text
    # Per merge request a status and a note from each governor; on the issue, the report.
    assert "9 action(s) recorded" in text
    assert re.search(r"quality-gate-enforcer\s+│ ISSUE_NOTE\s+│ #123", text), text


def test_without_the_webhook_the_demo_says_how_to_start_it(settings: Settings) -> None:
    closed = settings.model_copy(update={"gitlab_webhook_port": 9})  # discard: nothing there
    output = io.StringIO()
    try:
        run_roe_demo(closed, Console(file=output, width=200), timeout_s=5)
    except GitLabDeliveryError as exc:
        assert "does not answer on http://127.0.0.1:9/webhooks/gitlab" in str(exc)
        assert "buildkit dev up" in str(exc)
    else:
        raise AssertionError("the demo ran without a webhook")

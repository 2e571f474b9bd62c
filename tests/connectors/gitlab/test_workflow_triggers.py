"""Which built-in workflow each documented GitLab delivery starts: the webhook's
normalized event fed to ROE's trigger matching, no broker needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from buildkit.contracts import GitLabEvent
from connectors.gitlab import normalize
from streams.roe.spec import builtin_workflows, load_workflow
from streams.roe.triggers import match_event

FIXTURES = Path(__file__).parent / "fixtures"
WORKFLOWS = [load_workflow(p) for p in builtin_workflows()]
FEATURE = "feature-development-workflow@0.1.0"
MR_GOVERNANCE = "merge-request-governance@0.1.0"
PUSH_GOVERNANCE = "push-governance@0.1.0"


def delivery(name: str, header: str, **changes: Any) -> GitLabEvent:
    payload = json.loads((FIXTURES / f"{name}.json").read_text())
    for path, value in changes.items():
        target = payload
        *parents, leaf = path.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return normalize(
        header, payload, event_id=f"uuid-{name}", received_at=datetime(2026, 1, 1, tzinfo=UTC)
    )


def started(event: GitLabEvent) -> list[str]:
    return [m.workflow_id for m in match_event(WORKFLOWS, event)]


def test_an_opened_issue_labelled_feature_starts_the_feature_workflow_with_the_issue() -> None:
    event = delivery("issue", "Issue Hook", labels=[{"title": "feature", "id": 9}])

    [match] = match_event(WORKFLOWS, event)

    assert match.workflow_id == FEATURE
    assert match.inputs["gitlab.kind"] == "issue"
    assert match.inputs["gitlab.object_iid"] == "23"
    assert json.loads(match.inputs["gitlab.event"])["object_attributes"]["iid"] == 23


@pytest.mark.parametrize(
    "changes",
    [
        {"labels": [{"title": "API", "id": 1}]},  # the documented example: no feature label
        {"labels": [{"title": "feature", "id": 9}], "object_attributes__action": "close"},
    ],
    ids=["no-feature-label", "closed-not-opened"],
)
def test_other_issue_deliveries_start_nothing(changes: dict[str, Any]) -> None:
    assert started(delivery("issue", "Issue Hook", **changes)) == []


@pytest.mark.parametrize("action", ["open", "reopen", "update"])
def test_merge_request_deliveries_start_the_governance_workflow(action: str) -> None:
    event = delivery("merge_request", "Merge Request Hook", object_attributes__action=action)
    assert started(event) == [MR_GOVERNANCE]


def test_a_merged_request_starts_nothing() -> None:
    event = delivery("merge_request", "Merge Request Hook", object_attributes__action="merge")
    assert started(event) == []


def test_a_push_starts_push_governance() -> None:
    assert started(delivery("push", "Push Hook")) == [PUSH_GOVERNANCE]


@pytest.mark.parametrize(
    ("name", "header"),
    [("note_issue", "Note Hook"), ("pipeline", "Pipeline Hook"), ("tag_push", "Tag Push Hook")],
)
def test_deliveries_no_workflow_listens_to_start_nothing(name: str, header: str) -> None:
    assert started(delivery(name, header)) == []

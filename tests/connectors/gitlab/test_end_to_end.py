"""GitLab to ROE over HTTP, end to end on the embedded broker: a delivery POSTed to the
webhook connector (the dev stack's process) starts the workflow its trigger names; a
merge request runs the governors, real agents, whose GitLab actions are recorded."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.governors.branch_policy import BranchPolicyAgent
from agents.governors.version_sync import VersionSyncAgent
from agents.runtime.inprocess import serving
from buildkit.catalog import default_catalog
from buildkit.contracts import GitLabAction, WorkflowEvent, WorkflowEventKind
from buildkit.replay import BrokerReplay, parse_bound
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from connectors.gitlab.auth import dev_secret
from streams.roe.spec import builtin_workflows, load_workflow
from streams.roe.triggers import run_id_for
from tests.agents.governors.repos import Repo
from tests.roe.agents import StandInAgents, running, wait_for

pytestmark = pytest.mark.stack

K = WorkflowEventKind
FIXTURES = Path(__file__).parent / "fixtures"
SPECS = {spec.workflow_id: spec for spec in map(load_workflow, builtin_workflows())}
FEATURE = SPECS["feature-development-workflow@0.1.0"]
GOVERNANCE = SPECS["merge-request-governance@0.1.0"]


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def post(settings: Settings, url: str, header: str, body: dict[str, Any]) -> str:
    """Deliver ``body`` as GitLab does; the delivery's idempotency key."""
    key = str(uuid.uuid4())
    response = httpx.post(
        url,
        json=body,
        headers={
            "X-Gitlab-Event": header,
            "X-Gitlab-Token": dev_secret(settings),
            "Idempotency-Key": key,
        },
        timeout=15,
    )
    assert response.status_code == 200, response.text
    return key


def read_all(settings: Settings, topic: str) -> list[Any]:
    serde = SerdeRegistry(settings, default_catalog()).for_topic(topic)
    replay = BrokerReplay(settings, topic, parse_bound(None), parse_bound(None))
    try:
        return [serde.decode(r.value) for r in replay.records()]
    finally:
        replay.close()


def run_events(settings: Settings, run_ids: set[str]) -> list[WorkflowEvent]:
    return [
        e
        for e in read_all(settings, "bar.roe.events")
        if isinstance(e, WorkflowEvent) and e.run_id in run_ids
    ]


def ended(settings: Settings, run_ids: set[str]) -> dict[str, K]:
    ends = (K.WORKFLOW_SUCCEEDED, K.WORKFLOW_FAILED, K.WORKFLOW_CANCELLED)
    return {e.run_id: e.kind for e in run_events(settings, run_ids) if e.kind in ends}


def test_an_opened_feature_issue_starts_the_feature_workflow_with_the_issue_as_input(
    settings: Settings, gitlab_webhook: str
) -> None:
    body = fixture("issue")
    iid = int(time.time() * 1000) % 1_000_000
    body["object_attributes"]["iid"] = iid
    body["labels"] = [{"id": 9, "title": "feature"}]
    stand_ins = StandInAgents(settings, [stage.agent for stage in FEATURE.stages])

    with running(settings, stand_ins, workflows=[FEATURE]):
        key = post(settings, gitlab_webhook, "Issue Hook", body)
        run_id = run_id_for(FEATURE.workflow_id, f"gitlab:{key}")
        assert wait_for(lambda: run_id in ended(settings, {run_id}), 60), "the run did not end"
    stand_ins.halt()

    events = run_events(settings, {run_id})
    started = next(e for e in events if e.kind is K.WORKFLOW_STARTED)
    assert started.trigger_id == f"gitlab:{key}"
    assert started.inputs["gitlab.kind"] == "issue"
    assert started.inputs["gitlab.action"] == "open"
    assert started.inputs["gitlab.object_iid"] == str(iid)
    assert started.inputs["gitlab.labels"] == "feature"
    assert json.loads(started.inputs["gitlab.event"]) == body
    dispatched = [e.stage for e in events if e.kind is K.STAGE_DISPATCHED]
    assert dispatched == [stage.name for stage in FEATURE.stages]
    assert ended(settings, {run_id}) == {run_id: K.WORKFLOW_SUCCEEDED}


def test_a_redelivered_issue_is_published_once_and_starts_one_run(
    settings: Settings, gitlab_webhook: str
) -> None:
    body = fixture("issue")
    body["labels"] = [{"id": 9, "title": "feature"}]
    key = str(uuid.uuid4())
    headers = {
        "X-Gitlab-Event": "Issue Hook",
        "X-Gitlab-Token": dev_secret(settings),
        "Idempotency-Key": key,
    }
    stand_ins = StandInAgents(settings, [stage.agent for stage in FEATURE.stages])
    run_id = run_id_for(FEATURE.workflow_id, f"gitlab:{key}")

    with running(settings, stand_ins, workflows=[FEATURE]):
        answers = [
            httpx.post(gitlab_webhook, json=body, headers=headers, timeout=15) for _ in range(3)
        ]
        assert wait_for(lambda: run_id in ended(settings, {run_id}), 60), "the run did not end"
    stand_ins.halt()

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["duplicate"] for a in answers] == [False, True, True]
    published = [e for e in read_all(settings, "bar.gitlab.events") if e.event_id == key]
    assert len(published) == 1
    started = [e for e in run_events(settings, {run_id}) if e.kind is K.WORKFLOW_STARTED]
    assert len(started) == 1


def merge_request(repo: Repo, *, branch: str, head: str, iid: int, description: str) -> dict:
    body = fixture("merge_request")
    body["project"]["id"] = 77_000 + iid
    body["project"]["git_http_url"] = str(repo.path)
    body["project"]["default_branch"] = "main"
    attrs = body["object_attributes"]
    attrs.update(
        iid=iid,
        source_branch=branch,
        target_branch="main",
        description=description,
        title="Search users by name",
    )
    attrs["last_commit"]["id"] = head
    return body


def test_merge_requests_run_branch_policy_and_version_sync_and_record_their_actions(
    settings: Settings, gitlab_webhook: str, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "app")
    files = {"pyproject.toml": '[project]\nname = "app"\nversion = "1.0.0"\n'}
    repo.commit("chore: release 1.0.0", {**files, "CHANGELOG.md": "# Changelog\n\n## [1.0.0]\n"})
    repo.tag("v1.0.0")
    repo.switch("feature/42-search", create=True)
    good = repo.commit(
        "feat: search",
        {
            "pyproject.toml": '[project]\nname = "app"\nversion = "1.1.0"\n',
            "CHANGELOG.md": "# Changelog\n\n## [1.1.0]\n\n- search\n\n## [1.0.0]\n",
        },
    )
    repo.switch("main")
    repo.switch("wip", create=True)
    bad = repo.commit("feat: search, unreleased", {"search.py": "x = 1\n"})
    deliveries = {
        "good": merge_request(
            repo, branch="feature/42-search", head=good, iid=1, description="Closes #42"
        ),
        "bad": merge_request(repo, branch="wip", head=bad, iid=2, description=""),
    }

    with (
        serving(settings, [BranchPolicyAgent(), VersionSyncAgent()], heartbeat_interval_s=1),
        running(settings, None, workflows=[GOVERNANCE]),
    ):
        runs = {
            name: run_id_for(
                GOVERNANCE.workflow_id,
                f"gitlab:{post(settings, gitlab_webhook, 'Merge Request Hook', body)}",
            )
            for name, body in deliveries.items()
        }
        assert wait_for(lambda: len(ended(settings, set(runs.values()))) == 2, 90)

    assert ended(settings, set(runs.values())) == {
        runs["good"]: K.WORKFLOW_SUCCEEDED,
        runs["bad"]: K.WORKFLOW_FAILED,
    }
    actions = [a for a in read_all(settings, "bar.gitlab.actions") if isinstance(a, GitLabAction)]

    def of(run: str) -> dict[tuple[str, str], GitLabAction]:
        return {(a.requested_by, a.kind.value): a for a in actions if a.run_id == runs[run]}

    good_actions, bad_actions = of("good"), of("bad")
    expected = {
        (agent, kind)
        for agent in ("branch-policy", "version-sync")
        for kind in ("COMMIT_STATUS", "MERGE_REQUEST_NOTE")
    }
    assert set(good_actions) == expected
    assert set(bad_actions) == expected
    assert {a.state for k, a in good_actions.items() if k[1] == "COMMIT_STATUS"} == {"success"}
    assert good_actions["branch-policy", "COMMIT_STATUS"].sha == good
    # The stray branch breaks both: no pattern, no issue; a feat without a version bump.
    assert bad_actions["branch-policy", "COMMIT_STATUS"].state == "failed"
    assert bad_actions["version-sync", "COMMIT_STATUS"].state == "failed"
    note = bad_actions["branch-policy", "MERGE_REQUEST_NOTE"]
    assert (note.project_id, note.target_iid) == (77_002, 2)
    assert "wip" in (note.body or "")

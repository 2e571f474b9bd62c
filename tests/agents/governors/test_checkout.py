"""Which commit a governor checks: a merge request's own, never the default branch's.

Also the events governors do not check (a tag push) and merge requests from forks,
whose source branch is not in the cloned target project, only under GitLab's
``refs/merge-requests/<iid>/head``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.governors import BranchPolicyAgent, TddEnforcerAgent, VersionSyncAgent
from buildkit.contracts.events import ActionKind, TaskStatus
from tests.agents.governors.repos import (
    Repo,
    fixture,
    merge_request_event,
    run,
    workflow_parameters,
)

BRANCH = "feature/1-change"
MR_REF = "refs/merge-requests/3/head"
VERSION = {
    "pyproject.toml": '[project]\nname = "app"\nversion = "1.0.0"\n',
    "CHANGELOG.md": "# Changelog\n\n## [1.0.0] - 2026-01-02\n- things\n",
}


def status_sha(ctx) -> str:
    [status] = [a for a in ctx.actions if a.kind is ActionKind.COMMIT_STATUS]
    return status.sha


def without_last_commit(event: dict) -> dict:
    del event["object_attributes"]["last_commit"]
    return event


@pytest.fixture
def target(tmp_path: Path) -> Repo:
    """The project merge requests go into: main with a released version."""
    repo = Repo(tmp_path / "target")
    repo.commit("chore(release): 1.0.0", VERSION)
    return repo


def test_mr_without_last_commit_is_checked_at_its_source_branch_not_main(target):
    main = target.head()
    target.switch(BRANCH, create=True)
    tip = target.commit("docs: readme", {"README.md": "hi\n"})
    target.switch("main")  # the clone's HEAD is main
    event = without_last_commit(merge_request_event(target, source=BRANCH, head="unused"))

    result, ctx = run(VersionSyncAgent(), workflow_parameters(event))

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert status_sha(ctx) == tip != main
    assert f"at `{tip[:8]}`" in ctx.actions[1].body


def test_mr_without_last_commit_or_source_branch_is_bad_input_never_main(target):
    event = without_last_commit(merge_request_event(target, source=BRANCH, head="unused"))

    for agent in (VersionSyncAgent(), TddEnforcerAgent()):
        result, ctx = run(agent, workflow_parameters(event))

        assert result.error is not None
        assert result.error.code == "governor.bad_input"
        assert '"object_attributes.last_commit.id"' in result.error.message
        assert f"refs/remotes/origin/{BRANCH}" in result.error.message
        assert MR_REF in result.error.message
        assert ctx.actions == []  # no status lands on main


def test_mr_without_last_commit_falls_back_to_the_merge_request_ref(target):
    target.switch(BRANCH, create=True)
    tip = target.commit("docs: readme", {"README.md": "hi\n"})
    target.switch("main")
    target.git("update-ref", MR_REF, tip)
    target.git("branch", "-D", BRANCH)
    event = without_last_commit(merge_request_event(target, source=BRANCH, head="unused"))

    result, ctx = run(VersionSyncAgent(), workflow_parameters(event))

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert status_sha(ctx) == tip


def test_branch_policy_on_mr_without_last_commit_posts_no_status():
    event = without_last_commit(merge_request_event(None, source=BRANCH, head="unused"))

    result, ctx = run(BranchPolicyAgent(), workflow_parameters(event))

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert [a.kind for a in ctx.actions] == [ActionKind.MERGE_REQUEST_NOTE]


# -- merge requests from forks ---------------------------------------------------------


def fork_of(target: Repo, path: Path) -> tuple[Repo, str]:
    """A fork of ``target`` with one commit on ``BRANCH``; the fork and that commit."""
    fork = Repo(path)
    fork.git("pull", "--quiet", str(target.path), "main")
    fork.switch(BRANCH, create=True)
    return fork, fork.commit("docs: readme from the fork", {"README.md": "fork\n"})


def fork_event(target: Repo, head: str) -> dict:
    event = merge_request_event(target, source=BRANCH, head=head)
    event["object_attributes"].update(source_project_id=99, target_project_id=14)
    return event


@pytest.fixture
def decoy(target: Repo) -> str:
    """The target project has a branch named like the fork's: not the MR's commit."""
    target.switch(BRANCH, create=True)
    sha = target.commit("docs: unrelated", {"OTHER.md": "x\n"})
    target.switch("main")
    return sha


def test_fork_mr_is_checked_at_the_merge_request_ref_not_a_same_named_branch(
    target, decoy, tmp_path
):
    fork, tip = fork_of(target, tmp_path / "fork")
    # GitLab keeps the fork's commits in the target under the merge request's ref.
    target.git("fetch", "--quiet", str(fork.path), f"+{BRANCH}:{MR_REF}")

    with_head, ctx1 = run(VersionSyncAgent(), workflow_parameters(fork_event(target, tip)))
    without, ctx2 = run(
        VersionSyncAgent(), workflow_parameters(without_last_commit(fork_event(target, tip)))
    )

    assert with_head.status is TaskStatus.SUCCEEDED, with_head.error
    assert without.status is TaskStatus.SUCCEEDED, without.error
    assert status_sha(ctx1) == status_sha(ctx2) == tip != decoy


def test_fork_mr_whose_commit_is_not_in_the_target_fails_clearly(target, decoy, tmp_path):
    _, tip = fork_of(target, tmp_path / "fork")  # no merge request ref in the target

    with_head, _ = run(VersionSyncAgent(), workflow_parameters(fork_event(target, tip)))
    without, ctx = run(
        VersionSyncAgent(), workflow_parameters(without_last_commit(fork_event(target, tip)))
    )

    assert with_head.error is not None
    assert with_head.error.code == "governor.checkout_failed"
    assert f'"{tip}" is not in' in with_head.error.message
    assert MR_REF in with_head.error.message
    assert without.error is not None
    assert without.error.code == "governor.bad_input"
    # The same-named branch of the target is not the fork's: it is not even tried.
    assert f"origin/{BRANCH}" not in without.error.message
    assert ctx.actions == []


# -- tag pushes ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [BranchPolicyAgent, VersionSyncAgent, TddEnforcerAgent])
def test_tag_push_is_an_unsupported_event_for_every_governor(cls):
    event = fixture("tag_push")

    result, ctx = run(cls(), {"event": event})

    assert result.error is not None
    assert result.error.code == "governor.unsupported_event"
    assert '"tag_push" (refs/tags/v1.0.0)' in result.error.message
    assert not result.error.retryable
    assert ctx.actions == []

"""branch-policy: branch names, issue references and direct pushes, on real repositories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.governors import BranchPolicyAgent, GovernorPolicyError
from agents.governors.branch_policy import compile_pattern, issue_references
from agents.runtime.manifest import builtin_manifests_dir, parse_manifest
from agents.runtime.serve import load_agent
from buildkit.contracts.events import ActionKind, TaskStatus
from tests.agents.governors.repos import (
    PROJECT_ID,
    ZERO,
    Repo,
    merge_request_event,
    push_event,
    run,
    workflow_parameters,
)

STATUS = "bar/branch-policy"


@pytest.fixture
def agent() -> BranchPolicyAgent:
    return BranchPolicyAgent()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path / "origin")
    repo.commit("chore: start", {"README.md": "hello\n"})
    return repo


def by_kind(ctx, kind: ActionKind) -> list:
    return [a for a in ctx.actions if a.kind is kind]


# -- merge requests -----------------------------------------------------------------


def test_conforming_merge_request_passes_with_success_status_and_note(agent, repo):
    repo.switch("feature/12-login", create=True)
    head = repo.commit("feat: login", {"login.py": "x = 1\n"})
    event = merge_request_event(repo, source="feature/12-login", head=head, title="Add login")

    result, ctx = run(agent, workflow_parameters(event))

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert result.metrics["violations"] == 0
    [status] = by_kind(ctx, ActionKind.COMMIT_STATUS)
    assert (status.project_id, status.sha, status.state, status.title) == (
        PROJECT_ID,
        head,
        "success",
        STATUS,
    )
    [note] = by_kind(ctx, ActionKind.MERGE_REQUEST_NOTE)
    assert note.target_iid == 3
    assert "✅ **branch-policy**: passed" in note.body
    assert "`feature/12-login` matches `feature/<issue>-<slug>`" in note.body
    assert "the branch name refers to #12" in note.body
    report = json.loads(result.outputs["report"])
    assert [c["status"] for c in report["checks"]] == ["passed", "passed"]


def test_merge_request_from_badly_named_branch_without_issue_fails_with_fixes(agent):
    # GitLab's own example: "ms-viewport", title "MS-Viewport", no description.
    event = merge_request_event(None, source="ms-viewport", head="da15608", title="MS-Viewport")

    result, ctx = run(agent, workflow_parameters(event))

    assert result.status is TaskStatus.FAILED
    assert result.error is not None
    assert result.error.code == "governor.branch_policy_violation"
    assert "2 violation(s)" in result.error.message
    [status] = by_kind(ctx, ActionKind.COMMIT_STATUS)
    assert status.state == "failed"
    assert status.body is not None and status.body.startswith("2 violation(s): branch name")
    [note] = by_kind(ctx, ActionKind.MERGE_REQUEST_NOTE)
    assert "❌ **branch-policy**: 2 violations" in note.body
    assert "`ms-viewport` matches none of the allowed patterns" in note.body
    assert "git branch -m ms-viewport feature/123-ms-viewport" in note.body
    assert "`Closes #123`" in note.body


@pytest.mark.parametrize(
    "description",
    ["Closes #42", "Part of group/project#42.", "See http://example.com/g/p/-/issues/42"],
)
def test_issue_reference_in_description_satisfies_a_branch_without_issue(agent, description):
    event = merge_request_event(
        None, source="chore/bump-deps", head="abc", title="Bump", description=description
    )

    result, ctx = run(agent, workflow_parameters(event))

    assert result.status is TaskStatus.SUCCEEDED, result.error
    [note] = by_kind(ctx, ActionKind.MERGE_REQUEST_NOTE)
    assert "refers to #42" in note.body


def test_merge_request_without_issue_reference_fails_only_that_check(agent):
    event = merge_request_event(None, source="chore/bump-deps", head="abc", title="Bump #deps")

    result, _ = run(agent, workflow_parameters(event))

    assert result.error is not None
    assert result.error.code == "governor.branch_policy_violation"
    assert result.error.message.startswith("1 violation(s): issue reference: no issue")


def test_policy_override_in_the_task_can_drop_the_issue_requirement_and_success_note(agent):
    event = merge_request_event(None, source="chore/bump-deps", head="abc", title="Bump")
    params = workflow_parameters(
        event, policy={"require_issue_reference": False, "note_on_success": False}
    )

    result, ctx = run(agent, params)

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert [a.kind for a in ctx.actions] == [ActionKind.COMMIT_STATUS]


# -- pushes ---------------------------------------------------------------------------


def test_direct_push_to_protected_branch_is_a_violation(agent, repo):
    before = repo.head()
    after = repo.commit("fix: hot edit on main", {"README.md": "edited\n"})

    result, ctx = run(
        agent, workflow_parameters(push_event(repo, branch="main", before=before, after=after))
    )

    assert result.error is not None
    assert result.error.code == "governor.branch_policy_violation"
    assert "direct push to the protected branch `main` by `jsmith`" in result.error.message
    assert "not a merge commit" in result.error.message
    [status] = by_kind(ctx, ActionKind.COMMIT_STATUS)
    assert (status.sha, status.state) == (after, "failed")
    # A push has no merge request, and "main" names no issue: no note.
    assert not by_kind(ctx, ActionKind.MERGE_REQUEST_NOTE)
    assert not by_kind(ctx, ActionKind.ISSUE_NOTE)


def test_push_of_a_merge_commit_to_protected_branch_passes(agent, repo):
    before = repo.head()
    repo.switch("feature/7-docs", create=True)
    repo.commit("docs: more", {"docs.md": "more\n"})
    repo.switch("main")
    repo.commit("chore: meanwhile", {"other.txt": "x\n"})
    after = repo.merge("feature/7-docs", "Merge branch 'feature/7-docs' into 'main'")

    result, _ = run(
        agent, workflow_parameters(push_event(repo, branch="main", before=before, after=after))
    )

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert (
        "the push is a merge commit" in json.loads(result.outputs["report"])["checks"][0]["detail"]
    )


def test_allowed_pusher_may_push_to_protected_branch(agent, repo):
    before = repo.head()
    after = repo.commit("chore(release): 1.0.0")
    event = push_event(repo, branch="main", before=before, after=after, user="release-bot")

    denied, _ = run(agent, workflow_parameters(event))
    allowed, _ = run(agent, workflow_parameters(event, policy={"allowed_pushers": ["release-bot"]}))

    assert denied.status is TaskStatus.FAILED
    assert allowed.status is TaskStatus.SUCCEEDED, allowed.error


def test_default_branch_is_protected_whatever_its_name(agent, repo):
    repo.switch("trunk", create=True)
    after = repo.commit("fix: direct")
    event = push_event(repo, branch="trunk", after=after, before=repo.git("rev-parse", "HEAD~1"))
    event["project"]["default_branch"] = "trunk"

    result, _ = run(agent, workflow_parameters(event))

    assert result.error is not None
    assert "protected branch `trunk`" in result.error.message


def test_push_of_nonconforming_new_branch_fails_and_notes_the_issue_it_names(agent, repo):
    repo.switch("12-wip", create=True)
    after = repo.commit("wip")

    result, ctx = run(agent, workflow_parameters(push_event(repo, branch="12-wip", after=after)))

    assert result.error is not None
    assert result.error.code == "governor.branch_policy_violation"
    [note] = by_kind(ctx, ActionKind.ISSUE_NOTE)
    assert note.target_iid == 12
    assert "`12-wip` matches none of the allowed patterns" in note.body


def test_push_of_conforming_branch_passes_without_a_note(agent, repo):
    repo.switch("release/1.4.0-rc.1", create=True)
    after = repo.commit("chore: release candidate")

    result, ctx = run(
        agent, workflow_parameters(push_event(repo, branch="release/1.4.0-rc.1", after=after))
    )

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert [(a.kind, a.state) for a in ctx.actions] == [(ActionKind.COMMIT_STATUS, "success")]


def test_branch_deletion_is_not_checked(agent):
    event = push_event(None, branch="whatever", before="a" * 40, after=ZERO)

    result, ctx = run(agent, workflow_parameters(event))

    assert result.status is TaskStatus.SUCCEEDED
    assert ctx.actions == []


# -- direct parameters and bad input -------------------------------------------------


def test_direct_parameters_without_project_check_and_ask_for_no_actions(agent):
    good, ctx = run(agent, {"branch": "fix/9-crash"})
    bad, _ = run(agent, {"branch": "Fix/Crash"})

    assert good.status is TaskStatus.SUCCEEDED, good.error
    assert ctx.actions == []
    assert bad.error is not None and bad.error.code == "governor.branch_policy_violation"


@pytest.mark.parametrize(
    ("parameters", "code", "text"),
    [
        ({}, "governor.bad_input", 'missing "branch"'),
        ({"brnch": "x"}, "governor.bad_input", "unknown parameter(s) brnch (allowed: kind,"),
        ({"branch": "x", "project_id": "seven"}, "governor.bad_input", '"project_id"'),
        ({"branch": "x", "policy": {"allowed_pusher": []}}, "governor.bad_policy",
         'field "policy.allowed_pusher"'),
        ({"event": {"object_kind": "note"}}, "governor.unsupported_event", '"note"'),
        ("[1, 2]", "governor.bad_input", "must be a JSON object"),
    ],
)  # fmt: skip
def test_bad_input_fails_with_a_code_naming_the_field(agent, parameters, code, text):
    result, ctx = run(agent, parameters)

    assert result.error is not None
    assert result.error.code == code
    assert text in result.error.message
    assert ctx.actions == []


# -- policy and manifest -------------------------------------------------------------


def test_branch_templates_compile_to_anchored_regexes():
    regex = compile_pattern("feature/<issue>-<slug>")
    match = regex.fullmatch("feature/123-add-login")
    assert match is not None and match.group("issue") == "123"
    for bad in (
        "feature/123",
        "feature/abc-x",
        "feature/12-Add",
        "feature/12-a--b",
        "xfeature/1-a",
    ):
        assert regex.fullmatch(bad) is None, bad
    assert compile_pattern("release/<semver>").fullmatch("release/2.0.0-rc.1+b5")
    assert compile_pattern("a.b/<name>").fullmatch("aXb/x") is None  # "." is literal


def test_issue_references_are_found_in_order_once():
    assert issue_references("Fixes #3 and #4", "see g/p#3, http://x/-/issues/9", "!5 #x") == [
        3,
        4,
        9,
    ]


def test_invalid_manifest_policy_stops_the_agent_naming_the_field():
    manifest = parse_manifest(
        "manifest:\n  name: branch-policy\n  type: governor\n  policy:\n"
        "    branch_patterns: [feature/<issue>, bug/<ticket>]\n    protected_branch: [x]\n"
    )

    with pytest.raises(GovernorPolicyError) as info:
        BranchPolicyAgent(manifest)

    message = str(info.value)
    assert (
        'field "policy.branch_patterns[1]": "bug/<ticket>": unknown placeholder <ticket>' in message
    )
    assert 'field "policy.protected_branch": Extra inputs are not permitted' in message


def test_manifest_policy_must_be_a_mapping():
    from agents.runtime.manifest import ManifestError

    with pytest.raises(ManifestError) as info:
        parse_manifest("manifest:\n  name: x\n  type: governor\n  policy: [a]\n")
    assert info.value.problems == [(4, 11, 'field "policy": must be a mapping, got a list')]


def test_shipped_manifest_serves_this_agent_with_its_policy():
    agent = load_agent(builtin_manifests_dir() / "branch-policy.yaml")

    assert isinstance(agent, BranchPolicyAgent)
    assert agent.policy.protected_branches == ("main", "master")
    assert "release/<semver>" in agent.policy.branch_patterns

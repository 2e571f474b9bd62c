"""version-sync: versions valid, agreeing, in the changelog, bumped as the commits ask."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.governors import VersionSyncAgent
from agents.governors.version_sync import Bump, bump_of, changelog_releases
from buildkit.contracts.events import ActionKind, TaskStatus
from tests.agents.governors.repos import (
    Repo,
    merge_request_event,
    push_event,
    run,
    workflow_parameters,
)


@pytest.fixture
def agent() -> VersionSyncAgent:
    return VersionSyncAgent()


def version_files(version: str, *, package: str | None = None, changelog: str | None = None):
    """pyproject.toml, package.json and CHANGELOG.md all saying ``version`` unless told."""
    return {
        "pyproject.toml": f'[project]\nname = "app"\nversion = "{version}"\n',
        "package.json": json.dumps({"name": "app", "version": package or version}),
        "CHANGELOG.md": "# Changelog\n\n## [Unreleased]\n\n"
        f"## [{changelog or version}] - 2026-01-02\n- things\n\n## [0.0.1] - 2025-01-01\n",
    }


def released(tmp_path: Path, version: str = "1.0.0") -> Repo:
    """A repository whose main is tagged ``v<version>``, on branch feature/1-change."""
    repo = Repo(tmp_path / "origin")
    repo.commit(f"chore(release): {version}", version_files(version))
    repo.tag(f"v{version}")
    repo.switch("feature/1-change", create=True)
    return repo


def check_mr(agent, repo: Repo, **extra):
    event = merge_request_event(repo, source="feature/1-change", head=repo.head())
    return run(agent, workflow_parameters(event, **extra))


def message(result) -> str:
    assert result.error is not None, "expected a violation"
    assert result.error.code == "governor.version_sync_violation"
    return result.error.message


def test_minor_bump_for_a_feature_with_changelog_passes(agent, tmp_path):
    repo = released(tmp_path)
    repo.commit("feat: add export", {"export.py": "x = 1\n"})
    repo.commit("fix(export): off by one\n\nBody text.")
    head = repo.commit("chore(release): 1.1.0", version_files("1.1.0"))

    result, ctx = check_mr(agent, repo)

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert result.metrics == {"violations": 0.0, "commits_since_tag": 3.0}
    [status, note] = ctx.actions
    assert (status.kind, status.sha, status.state, status.title) == (
        ActionKind.COMMIT_STATUS, head, "success", "bar/version-sync",
    )  # fmt: skip
    assert note.kind is ActionKind.MERGE_REQUEST_NOTE
    assert "`v1.0.0` → `1.1.0`: the minor bump the commits ask for" in note.body
    assert "CHANGELOG.md's newest release is `1.1.0`" in note.body


def test_disagreeing_versions_are_a_violation_naming_each_file(agent, tmp_path):
    repo = released(tmp_path)
    repo.commit("fix: x", version_files("1.0.1", package="1.0.2"))

    result, ctx = check_mr(agent, repo)

    assert "pyproject.toml says `1.0.1`, package.json says `1.0.2`" in message(result)
    assert ctx.actions[0].state == "failed"
    assert "set the same version in every file, e.g. `1.0.2`" in ctx.actions[1].body


def test_invalid_semver_is_a_violation(agent, tmp_path):
    repo = released(tmp_path)
    repo.commit("fix: x", version_files("1.1", package="1.1"))

    result, _ = check_mr(agent, repo)

    assert "pyproject.toml: `1.1` is not a semantic version" in message(result)
    assert "package.json: `1.1` is not a semantic version" in message(result)


def test_missing_changelog_entry_is_a_violation(agent, tmp_path):
    repo = released(tmp_path)
    repo.commit("fix: x", version_files("1.0.1", changelog="1.0.0"))

    result, _ = check_mr(agent, repo)

    assert message(result) == (
        "1 violation(s): changelog entry: CHANGELOG.md has no entry on top for `1.0.1`: "
        "its newest release is `1.0.0`"
    )


def test_missing_changelog_is_a_violation_unless_not_required(agent, tmp_path):
    repo = released(tmp_path)
    repo.commit("fix: x", {**version_files("1.0.1"), "CHANGELOG.md": None})

    required, _ = check_mr(agent, repo)
    optional, _ = check_mr(agent, repo, policy={"require_changelog": False})

    assert "there is no CHANGELOG.md" in message(required)
    assert optional.status is TaskStatus.SUCCEEDED, optional.error


@pytest.mark.parametrize(
    ("commits", "version", "expected"),
    [
        (["fix: a"], "1.1.0", "ask for a patch bump to `1.0.1`"),
        (["feat: a"], "1.0.1", "ask for a minor bump to `1.1.0`"),
        (["feat!: drop py2"], "1.1.0", "ask for a major bump to `2.0.0`"),
        (["fix: a\n\nBREAKING CHANGE: the API moved"], "1.0.1", "major bump to `2.0.0`"),
        (["docs: a", "chore: b"], "1.0.1", "ask for no bump"),
        (["feat: a"], "0.9.0", "`0.9.0` is lower than the last tag `v1.0.0`"),
    ],
)
def test_bump_that_does_not_match_the_commits_is_a_violation(
    agent, tmp_path, commits, version, expected
):
    repo = released(tmp_path)
    for text in commits:
        repo.commit(text)
    repo.commit("chore: version", version_files(version))

    result, _ = check_mr(agent, repo)

    assert expected in message(result)


def test_unchanged_version_needs_a_bump_unless_bumping_at_release(agent, tmp_path):
    repo = released(tmp_path)
    repo.commit("feat: something new", {"new.py": "y = 2\n"})

    strict, ctx = check_mr(agent, repo)
    lenient, _ = check_mr(agent, repo, policy={"require_bump": False})

    assert "ask for a minor bump to `1.1.0` (`feat: something new`" in message(strict)
    assert "but the version is still `1.0.0`" in message(strict)
    assert "set the version to `1.1.0` in every version file" in ctx.actions[1].body
    assert lenient.status is TaskStatus.SUCCEEDED, lenient.error


def test_prerelease_of_the_expected_version_passes(agent, tmp_path):
    repo = released(tmp_path)
    repo.commit("feat: a")
    repo.commit("chore: rc", version_files("1.1.0-rc.1"))

    result, _ = check_mr(agent, repo)

    assert result.status is TaskStatus.SUCCEEDED, result.error


def test_before_1_0_a_breaking_change_bumps_the_minor(agent, tmp_path):
    repo = released(tmp_path, "0.3.0")
    repo.commit("feat!: new config format")
    repo.commit("chore: bump", version_files("0.4.0"))

    result, _ = check_mr(agent, repo)

    assert result.status is TaskStatus.SUCCEEDED, result.error


def test_without_a_tag_the_bump_is_skipped_and_said(agent, tmp_path):
    repo = Repo(tmp_path / "origin")
    head = repo.commit("feat: first", version_files("0.1.0"))
    event = push_event(repo, branch="main", after=head)

    result, ctx = run(agent, workflow_parameters(event))

    assert result.status is TaskStatus.SUCCEEDED, result.error
    checks = json.loads(result.outputs["report"])["checks"]
    assert checks[-1] == {
        "rule": "version bump",
        "status": "skipped",
        "detail": "no tag yet: the first release has nothing to compare with",
        "fix": None,
    }
    # A push that passed: a status, no note.
    assert [a.kind for a in ctx.actions] == [ActionKind.COMMIT_STATUS]


def test_only_present_files_are_compared(agent, tmp_path):
    repo = Repo(tmp_path / "origin")
    files = version_files("2.0.0")
    repo.commit(
        "chore: js only",
        {"package.json": files["package.json"], "CHANGELOG.md": files["CHANGELOG.md"]},
    )

    result, _ = run(agent, {"repository": str(repo.path)})

    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert "package.json: `2.0.0`" in result.outputs["report"]


def test_no_version_anywhere_is_a_violation(agent, tmp_path):
    repo = Repo(tmp_path / "origin")
    repo.commit("chore: empty", {"README.md": "hi\n"})

    result, _ = run(agent, {"checkout": str(repo.path)})

    assert "none of pyproject.toml, package.json and CHANGELOG.md holds a version" in message(
        result
    )


def test_a_working_tree_is_checked_in_place(agent, tmp_path):
    repo = released(tmp_path)
    repo.commit("fix: bug", version_files("1.0.1"))
    # Edited but not committed: the checkout is read as it is on disk.
    (repo.path / "package.json").write_text(json.dumps({"version": "9.9.9"}))

    result, _ = run(agent, {"checkout": str(repo.path)})

    assert "package.json says `9.9.9`" in message(result)


def test_missing_repository_is_bad_input(agent):
    result, _ = run(agent, {"branch": "x"})

    assert result.error is not None
    assert result.error.code == "governor.bad_input"
    assert 'missing "repository"' in result.error.message


def test_unknown_revision_fails_the_checkout(agent, tmp_path):
    repo = released(tmp_path)

    result, _ = run(agent, {"repository": str(repo.path), "head": "f" * 40})

    assert result.error is not None
    assert result.error.code == "governor.checkout_failed"


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("feat: x", Bump.MINOR),
        ("feat(api): x", Bump.MINOR),
        ("fix: x", Bump.PATCH),
        ("perf: x", Bump.PATCH),
        ("refactor!: x", Bump.MAJOR),
        ("chore: x\n\nBREAKING-CHANGE: y", Bump.MAJOR),
        ("docs: x", Bump.NONE),
        ("Update README", Bump.NONE),
        ("feat:missing space", Bump.NONE),
    ],
)
def test_conventional_commit_bump_levels(text, level):
    assert bump_of(text) == level


def test_changelog_releases_skip_unreleased_and_read_both_heading_styles():
    text = "# Changelog\n## [Unreleased]\n## 1.2.0 - 2026-01-01\n## [v1.1.0]\n### Added\n"
    assert changelog_releases(text) == ["1.2.0", "1.1.0"]


def test_unreachable_repository_fails_the_checkout_as_retryable(agent, tmp_path):
    result, _ = run(agent, {"repository": str(tmp_path / "nowhere"), "project_id": 1})

    assert result.error is not None
    assert result.error.code == "governor.checkout_failed"
    assert result.error.retryable
    assert "git clone --quiet --no-checkout --" in result.error.message

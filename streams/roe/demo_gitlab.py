"""What the demo sends GitLab's way: deliveries in the shape GitLab's webhook
documentation gives (an issue opened with the ``feature`` label, a merge request
opened on a real repository), and that repository, built with git.

The merge request's ``project.git_http_url`` is the local repository's path, which
``git clone`` reads like any remote: the governors check out the very commit the
delivery names, as they would from GitLab.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from buildkit.errors import BuildKitError
from buildkit.settings import Settings
from connectors.gitlab.auth import token_for
from connectors.gitlab.stack import webhook_url

__all__ = [
    "SPEC",
    "DemoRepository",
    "GitLabDeliveryError",
    "deliver",
    "demo_repository",
    "issue_delivery",
    "merge_request_delivery",
]

PROJECT_ID = 4200
PROJECT_PATH = "platform/users-api"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Demo",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Demo",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
}


class GitLabDeliveryError(BuildKitError):
    """The webhook did not take a delivery (not running, or it answered an error)."""


def deliver(settings: Settings, header: str, body: dict[str, Any], key: str) -> None:
    """POST ``body`` to the webhook as GitLab does (event header, token, idempotency
    key); returns once it answered 2xx, i.e. once the broker has the event."""
    url = webhook_url(settings)
    project = body.get("project") or {}
    token = token_for(settings, project.get("id"), project.get("path_with_namespace"))
    headers = {
        "X-Gitlab-Event": header,
        "X-Gitlab-Token": token,
        "X-Gitlab-Event-UUID": key,
        "Idempotency-Key": key,
        "User-Agent": "GitLab/18.6.0",
    }
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=15)
    except httpx.HTTPError as exc:
        raise GitLabDeliveryError(
            f"the GitLab webhook does not answer on {url} ({exc}) — start it: buildkit dev up"
        ) from exc
    if not response.is_success:
        raise GitLabDeliveryError(
            f"the GitLab webhook on {url} answered {response.status_code}: {response.text[:200]}"
        )


@dataclass(frozen=True)
class DemoRepository:
    """A git repository with ``main`` tagged ``v1.0.0`` and two branches on top: one
    the team's policies accept, one they do not."""

    path: Path
    branch: str
    head: str
    version: str
    stray_branch: str
    stray_head: str


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **_GIT_ENV},
    )
    return done.stdout.strip()


def _write_versions(repo: Path, version: str, changes: list[tuple[str, str]]) -> None:
    (repo / "pyproject.toml").write_text(
        f'[project]\nname = "users-api"\nversion = "{version}"\n', encoding="utf-8"
    )
    (repo / "package.json").write_text(
        f'{{\n  "name": "users-api",\n  "version": "{version}"\n}}\n', encoding="utf-8"
    )
    sections = "".join(f"## [{v}] - 2026-11-26\n\n- {what}\n\n" for v, what in changes)
    (repo / "CHANGELOG.md").write_text(f"# Changelog\n\n{sections}", encoding="utf-8")


def demo_repository(root: Path) -> DemoRepository:
    """A fresh repository under ``root`` (replacing one left by an earlier demo):
    ``v1.0.0`` on ``main``, then ``feature/123-user-search`` with a ``feat:`` commit
    that bumps every version file to 1.1.0 and adds its changelog entry."""
    repo = root / "users-api"
    if repo.exists():
        subprocess.run(["rm", "-rf", str(repo)], check=True)
    repo.mkdir(parents=True)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _write_versions(repo, "1.0.0", [("1.0.0", "First release.")])
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "chore: release 1.0.0")
    _git(repo, "tag", "v1.0.0")
    branch = "feature/123-user-search"
    _git(repo, "checkout", "--quiet", "-b", branch)
    _write_versions(
        repo, "1.1.0", [("1.1.0", "Search users by name (#123)."), ("1.0.0", "First release.")]
    )
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "feat: search users by name\n\nCloses #123")
    head = _git(repo, "rev-parse", "HEAD")
    stray = "quick-fix"
    _git(repo, "checkout", "--quiet", "-b", stray, "main")
    (repo / "README.md").write_text("# users-api\n\nThe users service.\n", encoding="utf-8")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "docs: add a readme")
    stray_head = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "--quiet", branch)
    return DemoRepository(repo, branch, head, "1.1.0", stray, stray_head)


def _project(git_url: str = "") -> dict[str, Any]:
    return {
        "id": PROJECT_ID,
        "name": "users-api",
        "path_with_namespace": PROJECT_PATH,
        "web_url": f"https://gitlab.example.com/{PROJECT_PATH}",
        "git_http_url": git_url or f"https://gitlab.example.com/{PROJECT_PATH}.git",
        "default_branch": "main",
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


SPEC = Path(__file__).parent / "specs" / "petstore.yaml"


def issue_delivery(iid: int, title: str, spec: str | None = None) -> dict[str, Any]:
    """An ``Issue Hook`` body: issue ``iid`` opened with the ``feature`` label, ``spec``
    (an OpenAPI document) attached as a fenced code block in its description."""
    description = "As a support engineer I want to find users by name."
    if spec is not None:
        description = f"The API this feature needs:\n\n```yaml\n{spec}```\n"
    labels = [{"id": 1, "title": "feature", "color": "#428BCA", "type": "ProjectLabel"}]
    return {
        "object_kind": "issue",
        "event_type": "issue",
        "user": {"id": 7, "name": "Ada Demo", "username": "ada"},
        "project": _project(),
        "object_attributes": {
            "id": 900_000 + iid,
            "iid": iid,
            "title": title,
            "description": description,
            "state": "opened",
            "action": "open",
            "created_at": _now(),
            "updated_at": _now(),
            "labels": labels,
        },
        "labels": labels,
    }


def merge_request_delivery(
    repo: DemoRepository, iid: int, *, stray: bool = False
) -> dict[str, Any]:
    """A ``Merge Request Hook`` body: merge request ``iid`` opened from the repository's
    feature branch (or, ``stray``, from the branch that breaks the policies: no issue
    named anywhere) into ``main``, its last commit the branch head."""
    branch, head = (repo.stray_branch, repo.stray_head) if stray else (repo.branch, repo.head)
    title = "Add a readme" if stray else "Search users by name"
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 7, "name": "Ada Demo", "username": "ada"},
        "project": _project(str(repo.path)),
        "object_attributes": {
            "id": 800_000 + iid,
            "iid": iid,
            "title": title,
            "description": "" if stray else "Closes #123",
            "source_branch": branch,
            "target_branch": "main",
            "state": "opened",
            "action": "open",
            "created_at": _now(),
            "updated_at": _now(),
            "last_commit": {"id": head, "message": title},
            "labels": [],
        },
        "labels": [],
    }

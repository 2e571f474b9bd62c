"""Build small real git repositories and the GitLab events about them, for governor tests.

``Repo`` wraps ``git`` in a directory of ``tmp_path``, with a fixed author so no
global git configuration is needed. The events are copies of GitLab's documented
webhook examples (``tests/connectors/gitlab/fixtures``) pointed at such a repository:
its path works as ``project.git_http_url`` for ``git clone``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from agents.runtime.agent import Agent
from agents.runtime.testing import AgentTestContext
from buildkit.contracts.events import AgentResult

FIXTURES = Path(__file__).parent.parent.parent / "connectors" / "gitlab" / "fixtures"
PROJECT_ID = 15
ZERO = "0" * 40

_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


class Repo:
    """A git repository in ``path`` with a ``main`` branch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args],
            cwd=self.path,
            env={**os.environ, **_ENV},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def commit(self, message: str, files: dict[str, str | None] | None = None) -> str:
        """Write (or, for ``None``, delete) ``files`` and commit them; the new sha."""
        for name, text in (files or {}).items():
            target = self.path / name
            if text is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def switch(self, branch: str, *, create: bool = False) -> None:
        self.git("switch", "--quiet", *(["-c"] if create else []), branch)

    def tag(self, name: str) -> None:
        self.git("tag", name)

    def merge(self, branch: str, message: str) -> str:
        """Merge ``branch`` into the current branch with a merge commit; its sha."""
        self.git("merge", "--quiet", "--no-ff", "-m", message, branch)
        return self.head()


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def merge_request_event(
    repo: Repo | None,
    *,
    source: str,
    head: str,
    target: str = "main",
    title: str = "A change",
    description: str = "",
    iid: int = 3,
) -> dict[str, Any]:
    """GitLab's merge request example, from ``source`` into ``target`` of ``repo``."""
    event = copy.deepcopy(fixture("merge_request"))
    event["project"].update(
        id=PROJECT_ID,
        git_http_url=str(repo.path) if repo else "http://example.invalid/x.git",
        default_branch="main",
    )
    event["object_attributes"].update(
        iid=iid,
        source_branch=source,
        target_branch=target,
        title=title,
        description=description,
    )
    event["object_attributes"]["last_commit"]["id"] = head
    return event


def push_event(
    repo: Repo | None,
    *,
    branch: str,
    after: str,
    before: str = ZERO,
    user: str = "jsmith",
) -> dict[str, Any]:
    """GitLab's push example, of ``branch`` from ``before`` to ``after`` in ``repo``."""
    event = copy.deepcopy(fixture("push"))
    event.update(
        ref=f"refs/heads/{branch}",
        before=before,
        after=after,
        checkout_sha=None if after == ZERO else after,
        user_username=user,
        project_id=PROJECT_ID,
    )
    event["project"].update(
        id=PROJECT_ID,
        git_http_url=str(repo.path) if repo else "http://example.invalid/x.git",
        default_branch="main",
    )
    return event


def workflow_parameters(event: dict[str, Any], **extra: Any) -> str:
    """The ``parameters_json`` the workflow engine sends for a run ``event`` started."""
    inputs = {
        "gitlab.kind": event["object_kind"],
        "gitlab.project_id": str(PROJECT_ID),
        "gitlab.event": json.dumps(event),
    }
    return json.dumps(
        {
            "run_id": "run-1",
            "workflow_id": "merge-request-governance",
            "stage": "governor",
            "workflow_inputs": inputs,
            "outputs": [],
            **extra,
        }
    )


def run(agent: Agent, parameters: str | dict[str, Any]) -> tuple[AgentResult, AgentTestContext]:
    """Run one task with ``parameters`` through ``agent``; its result and test context."""
    ctx = AgentTestContext(agent)
    text = parameters if isinstance(parameters, str) else json.dumps(parameters)
    result = asyncio.run(ctx.run(parameters_json=text))
    return result, ctx

"""The git a governor needs: a checkout of the revision to check, and its history.

:func:`workspace` clones ``repository`` (a URL or a path) into a temporary directory
and checks out ``head`` detached, or uses an existing working tree (``checkout``) in
place. Every git call runs with a timeout, never prompts for credentials, and fails
with :class:`GitError` quoting the command and git's own message. A clone of a
private GitLab project needs credentials the deployment configures for git (a
credential helper or an ``insteadOf`` URL with a token); governors hold none.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agents.governors.inputs import BAD_INPUT, GovernorInput
from agents.runtime.agent import AgentFault

__all__ = [
    "CHECKOUT_FAILED",
    "Commit",
    "GitError",
    "Workspace",
    "git",
    "workspace",
]

#: Fault code when the repository cannot be cloned or the revision is not in it.
CHECKOUT_FAILED = "governor.checkout_failed"
_GIT_TIMEOUT_S = 120.0
# Unit separator and record separator: they cannot occur in a commit message git prints.
_US, _RS = "\x1f", "\x1e"


class GitError(AgentFault):
    """A git command failed; the message quotes it and git's stderr."""

    def __init__(self, args: list[str], cwd: Path | None, stderr: str) -> None:
        where = f" in {cwd}" if cwd else ""
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
        super().__init__(CHECKOUT_FAILED, f"git {' '.join(args)}{where} failed: {detail}")


def git(cwd: Path | None, *args: str, timeout_s: float = _GIT_TIMEOUT_S) -> str:
    """Run ``git args`` in ``cwd``; its stdout, or :class:`GitError`."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(list(args), cwd, f"timed out after {timeout_s:g}s") from exc
    if done.returncode != 0:
        raise GitError(list(args), cwd, done.stderr)
    return done.stdout


@dataclass(frozen=True)
class Commit:
    """One commit: its sha, parents and full message."""

    sha: str
    parents: tuple[str, ...]
    message: str

    @property
    def subject(self) -> str:
        """The first line of the message."""
        return self.message.split("\n", 1)[0]

    @property
    def short(self) -> str:
        """The sha's first 8 characters."""
        return self.sha[:8]


@dataclass(frozen=True)
class Workspace:
    """A working tree at the revision to check, and the revision it starts from."""

    path: Path
    #: Full sha of the checked revision.
    head: str
    #: Full sha of the base revision, or ``None`` when there is none to compare with.
    base: str | None

    def git(self, *args: str) -> str:
        """Run git in this working tree."""
        return git(self.path, *args)

    def resolve(self, rev: str) -> str | None:
        """The commit sha ``rev`` names here, or ``None`` if it names none."""
        try:
            return self.git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
        except GitError:
            return None

    def commits(self, since: str | None, *, merges: bool = False) -> list[Commit]:
        """The commits after ``since`` up to ``head``, oldest first (all of ``head``'s
        history when ``since`` is ``None``); merge commits only if ``merges``."""
        rng = f"{since}..{self.head}" if since else self.head
        flags = [] if merges else ["--no-merges"]
        out = self.git("log", "--reverse", *flags, f"--format=%H{_US}%P{_US}%B{_RS}", rng)
        found = []
        for record in out.split(_RS):
            if not record.strip():
                continue
            sha, parents, message = record.strip("\n").split(_US, 2)
            found.append(Commit(sha, tuple(parents.split()), message.strip()))
        return found

    def changes(self, sha: str) -> list[tuple[str, str]]:
        """``(status, path)`` of each file commit ``sha`` changes against its first
        parent: ``A`` added, ``M`` modified, ``D`` deleted; a rename is ``R`` and its
        new path."""
        out = self.git("diff-tree", "--root", "--no-commit-id", "-r", "-M", "--name-status", sha)
        found = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                found.append((parts[0][0], parts[-1]))
        return found

    def show(self, sha: str, path: str) -> str | None:
        """The text of ``path`` at commit ``sha``, or ``None`` if it is not there."""
        try:
            return self.git("show", f"{sha}:{path}")
        except GitError:
            return None

    def last_tag(self) -> str | None:
        """The nearest tag reachable from ``head`` (``git describe --tags --abbrev=0``)."""
        try:
            return self.git("describe", "--tags", "--abbrev=0", self.head).strip() or None
        except GitError:
            return None


@contextmanager
def workspace(inp: GovernorInput) -> Iterator[Workspace]:
    """A :class:`Workspace` for ``inp``: its ``checkout`` in place, else a temporary
    clone of its ``repository`` at ``head`` (removed afterwards).

    For a merge request ``head`` is its last commit or, when the event has none, its
    source branch's tip (``origin/<source_branch>``, not for a fork), then GitLab's
    ``refs/merge-requests/<iid>/head``; never the clone's ``HEAD``: that would check
    the default branch and post the verdict on it. ``Workspace.head`` is the sha
    actually checked.

    ``base`` is ``inp.base`` if given, else for a merge request the target branch as
    the clone knows it (``origin/<target_branch>``); ``None`` if it does not resolve.
    Raises a ``governor.bad_input`` fault when there is nothing to check out and a
    ``governor.checkout_failed`` fault when git cannot do it.
    """
    if inp.checkout:
        path = Path(inp.checkout)
        if not path.is_dir():
            raise AgentFault(BAD_INPUT, f'"checkout": {path} is not a directory')
        yield _prepared(path, inp, clone=False)
        return
    repository = inp.need(
        "repository",
        'the event has no "project.git_http_url": pass "repository" (a git URL or path) '
        'or "checkout" (a working tree)',
    )
    with tempfile.TemporaryDirectory(prefix="bar-governor-") as tmp:
        path = Path(tmp) / "checkout"
        # "--" so a repository named "-x" is never taken for an option.
        try:
            git(None, "clone", "--quiet", "--no-checkout", "--", repository, str(path))
        except GitError as exc:
            # The server may be down for a moment: worth another attempt.
            exc.retryable = True
            raise
        yield _prepared(path, inp, clone=True)


def _prepared(path: Path, inp: GovernorInput, *, clone: bool) -> Workspace:
    probe = Workspace(path, "HEAD", None)
    if probe.resolve("HEAD") is None and not clone:
        raise AgentFault(BAD_INPUT, f'"checkout": {path} is not a git working tree with commits')
    if inp.kind == "merge_request":
        head = _merge_request_head(probe, inp, clone=clone)
    else:
        found = probe.resolve(inp.head or "HEAD")
        if found is None:
            raise AgentFault(
                CHECKOUT_FAILED,
                f'revision "{inp.head or "HEAD"}" is not in {inp.repository or path}',
            )
        head = found
    if clone:
        git(path, "checkout", "--quiet", "--detach", head)
    base = None
    if inp.base:
        base = probe.resolve(inp.base)
    elif inp.target_branch:
        base = probe.resolve(f"origin/{inp.target_branch}") or probe.resolve(inp.target_branch)
    return Workspace(path, head, base)


def _merge_request_ref(probe: Workspace, inp: GovernorInput) -> str | None:
    """Fetch GitLab's ``refs/merge-requests/<iid>/head`` (the MR's commits, a fork's
    too) into the clone; the local ref it is fetched to, or ``None`` if it is not there."""
    if inp.merge_request_iid is None:
        return None
    local = f"refs/remotes/origin/merge-requests/{inp.merge_request_iid}"
    remote = f"refs/merge-requests/{inp.merge_request_iid}/head"
    try:
        probe.git("fetch", "--quiet", "origin", f"+{remote}:{local}")
    except GitError:
        return None
    return local


def _merge_request_head(probe: Workspace, inp: GovernorInput, *, clone: bool) -> str:
    """The sha of the merge request's source commit; never the clone's ``HEAD``.

    ``head`` (the event's ``last_commit``) when given, fetching the MR ref if the clone
    lacks it (a fork). Without it: the source branch's tip, ``origin/<branch>`` (not for
    a fork, whose branch of that name is another project's), then the MR ref. Nothing
    found is a ``governor.bad_input`` fault naming the missing field: checking the
    default branch instead would stamp a verdict on code the merge request lacks.
    """
    where = inp.repository or str(probe.path)
    if inp.head:
        head = probe.resolve(inp.head)
        if head is None and clone and _merge_request_ref(probe, inp) is not None:
            head = probe.resolve(inp.head)
        if head is None:
            raise AgentFault(
                CHECKOUT_FAILED,
                f'revision "{inp.head}" is not in {where}'
                + (
                    f" nor under refs/merge-requests/{inp.merge_request_iid}/head"
                    if clone and inp.merge_request_iid is not None
                    else ""
                ),
            )
        return head
    tried: list[str] = []
    if inp.branch and not inp.fork:
        for rev in (f"refs/remotes/origin/{inp.branch}", f"refs/heads/{inp.branch}"):
            tried.append(rev)
            if (head := probe.resolve(rev)) is not None:
                return head
    if clone and inp.merge_request_iid is not None:
        tried.append(f"refs/merge-requests/{inp.merge_request_iid}/head")
        if (ref := _merge_request_ref(probe, inp)) and (head := probe.resolve(ref)):
            return head
    looked = f"; none of {', '.join(tried)} is in {where}" if tried else ""
    raise AgentFault(
        BAD_INPUT,
        'missing "head": the merge request event has no "object_attributes.last_commit.id"'
        f'{looked}. Pass "head" (the commit to check).',
    )

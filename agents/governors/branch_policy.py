"""The branch-policy governor: branch names, issue links, and no direct pushes to protected
branches.

Rules (``policy:`` in ``agents/manifests/branch-policy.yaml``, see :class:`BranchPolicy`):

* **Branch name.** A merge request's source branch, and every pushed branch, matches
  one of ``branch_patterns``. Patterns are templates: literal text plus placeholders
  ``<issue>`` (an issue number), ``<slug>`` (lowercase words joined by ``-``),
  ``<semver>`` (``1.2.3``, ``1.2.3-rc.1``) and ``<name>`` (any one path part), e.g.
  ``feature/<issue>-<slug>``. A protected branch (say ``main`` into ``production``)
  is a valid source too.
* **Issue reference.** A merge request names its issue: ``#12``, ``Closes #12``,
  ``group/project#12`` or an issue URL in its title or description, or an issue
  number in its branch name (``feature/12-login``).
* **No direct push to a protected branch** (``protected_branches`` globs, plus the
  project's default branch). GitLab reports a merged merge request as a push too, so
  a push is allowed when its head is a merge commit (two parents; this needs the
  repository, which is cloned) or the pusher is in ``allowed_pushers`` (the bots and
  the merge user of fast-forward or squash merges). Anything else is a violation.

No checkout is needed for the name rules; only the merge commit test clones.
"""

from __future__ import annotations

import fnmatch
import re
from functools import cached_property
from typing import Annotated

from pydantic import AfterValidator, Field

from agents.governors.base import Governor, GovernorPolicy
from agents.governors.checkout import workspace
from agents.governors.inputs import GovernorInput
from agents.governors.report import Report

__all__ = [
    "DEFAULT_PATTERNS",
    "BranchPolicy",
    "BranchPolicyAgent",
    "compile_pattern",
    "issue_references",
]

#: The branch names allowed when the manifest names none.
DEFAULT_PATTERNS = (
    "feature/<issue>-<slug>",
    "fix/<issue>-<slug>",
    "hotfix/<issue>-<slug>",
    "release/<semver>",
    "chore/<slug>",
    "docs/<slug>",
)
_PLACEHOLDERS = {
    "issue": r"[1-9]\d*",
    "slug": r"[a-z0-9]+(?:-[a-z0-9]+)*",
    "semver": r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?",
    "name": r"[A-Za-z0-9._-]+",
}
_PLACEHOLDER = re.compile(r"<([^<>]*)>")
# "#12" after a space, bracket or a project path ("group/project#12"), and issue URLs.
_ISSUE_REFS = (
    re.compile(r"(?:^|[\s(\[,;:])(?:[\w.-]+(?:/[\w.-]+)*)?#([1-9]\d*)\b"),
    re.compile(r"/issues/([1-9]\d*)\b"),
)


def compile_pattern(template: str) -> re.Pattern[str]:
    """The regex of a branch template; ``<issue>`` becomes the group ``issue``.

    Raises ValueError for an unknown placeholder, naming the ones there are.
    """
    if not template.strip():
        raise ValueError("a branch pattern must not be empty")
    out, at, seen_issue = "", 0, False
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in _PLACEHOLDERS:
            known = ", ".join(f"<{k}>" for k in _PLACEHOLDERS)
            raise ValueError(f'"{template}": unknown placeholder <{name}> (known: {known})')
        out += re.escape(template[at : match.start()])
        part = _PLACEHOLDERS[name]
        if name == "issue" and not seen_issue:
            part, seen_issue = f"(?P<issue>{part})", True
        out += part
        at = match.end()
    out += re.escape(template[at:])
    return re.compile(out)


def _check_pattern(template: str) -> str:
    compile_pattern(template)
    return template


def issue_references(*texts: str) -> list[int]:
    """The issue numbers ``texts`` refer to, in order of appearance, each once."""
    found: list[int] = []
    for text in texts:
        for regex in _ISSUE_REFS:
            for match in regex.finditer(text):
                number = int(match.group(1))
                if number not in found:
                    found.append(number)
    return found


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "change"


class BranchPolicy(GovernorPolicy):
    """The ``policy:`` of the branch-policy governor."""

    #: Branch name templates; a branch must match one of them (see the module docstring).
    branch_patterns: tuple[Annotated[str, AfterValidator(_check_pattern)], ...] = Field(
        default=DEFAULT_PATTERNS, min_length=1
    )
    #: Globs of the branches that change only through merge requests.
    protected_branches: tuple[str, ...] = ("main", "master")
    #: Also protect the project's default branch, whatever its name.
    protect_default_branch: bool = True
    #: Usernames that may push to a protected branch (release bots, the merge user).
    allowed_pushers: tuple[str, ...] = ()
    #: A push whose head is a merge commit counts as a merge, not a direct push.
    allow_merge_commits: bool = True
    #: A merge request must reference an issue.
    require_issue_reference: bool = True

    @cached_property
    def compiled(self) -> list[tuple[str, re.Pattern[str]]]:
        """Each branch template with its regex."""
        return [(t, compile_pattern(t)) for t in self.branch_patterns]


class BranchPolicyAgent(Governor[BranchPolicy]):
    """Checks branch names, issue references and pushes to protected branches."""

    manifest_file = "branch-policy"
    violation_code = "governor.branch_policy_violation"
    policy_model = BranchPolicy

    def check(self, inp: GovernorInput, policy: BranchPolicy, report: Report) -> None:
        """Apply the merge request or push rules to ``inp``."""
        if inp.kind == "merge_request":
            branch = inp.need("branch", 'the merge request has no "source_branch"')
            issue = self._name(branch, inp, policy, report)
            self._issue(branch, issue, inp, policy, report)
        elif inp.kind == "push":
            if inp.branch is None:
                report.skip("branch name", f"`{inp.ref}` is not a branch")
            elif self._protected(inp.branch, inp, policy):
                self._direct_push(inp.branch, inp, policy, report)
            else:
                self._name(inp.branch, inp, policy, report)
        else:
            branch = inp.need("branch", "name the branch to check")
            issue = self._name(branch, inp, policy, report)
            if inp.title or inp.description:
                self._issue(branch, issue, inp, policy, report)

    def _protected(self, branch: str, inp: GovernorInput, policy: BranchPolicy) -> bool:
        globs = list(policy.protected_branches)
        if policy.protect_default_branch and inp.default_branch:
            globs.append(inp.default_branch)
        return any(fnmatch.fnmatchcase(branch, g) for g in globs)

    def _name(
        self, branch: str, inp: GovernorInput, policy: BranchPolicy, report: Report
    ) -> int | None:
        """Check the branch name; the issue number its pattern holds, if any."""
        for template, regex in policy.compiled:
            match = regex.fullmatch(branch)
            if match:
                report.add("branch name", True, f"`{branch}` matches `{template}`")
                issue = match.groupdict().get("issue")
                return int(issue) if issue else None
        if inp.kind == "merge_request" and self._protected(branch, inp, policy):
            report.add("branch name", True, f"`{branch}` is a protected branch")
            return None
        allowed = ", ".join(f"`{t}`" for t in policy.branch_patterns)
        example = f"feature/123-{_slug(branch.rsplit('/', 1)[-1])}"
        report.add(
            "branch name",
            False,
            f"`{branch}` matches none of the allowed patterns ({allowed})",
            f"rename the branch to match one of {allowed}, with the issue number it works "
            f"on, e.g. `git branch -m {branch} {example}` then `git push -u origin {example}`"
            + (", and open the merge request again from it" if inp.kind == "merge_request" else "")
            + ".",
        )
        return None

    def _issue(
        self,
        branch: str,
        issue: int | None,
        inp: GovernorInput,
        policy: BranchPolicy,
        report: Report,
    ) -> None:
        if not policy.require_issue_reference:
            report.skip("issue reference", "not required by this project's policy")
            return
        refs = issue_references(inp.title, inp.description)
        if refs:
            named = ", ".join(f"#{n}" for n in refs)
            report.add("issue reference", True, f"the title or description refers to {named}")
        elif issue is not None:
            report.add("issue reference", True, f"the branch name refers to #{issue}")
        else:
            report.add(
                "issue reference",
                False,
                f"no issue is referenced: none in the title, the description or the branch "
                f"`{branch}`",
                "add the issue to the description, e.g. `Closes #123`, so the change is "
                "linked to what it implements (and the issue closes on merge).",
            )

    def _direct_push(
        self, branch: str, inp: GovernorInput, policy: BranchPolicy, report: Report
    ) -> None:
        rule = "protected branch"
        if inp.user and inp.user in policy.allowed_pushers:
            report.add(rule, True, f"`{branch}` is protected; `{inp.user}` may push to it")
            return
        why = ""
        if policy.allow_merge_commits and inp.head:
            if inp.repository or inp.checkout:
                with workspace(inp) as ws:
                    report.sha = ws.head  # the commit actually checked
                    parents = ws.git("rev-list", "--parents", "-n", "1", ws.head).split()[1:]
                if len(parents) >= 2:
                    report.add(rule, True, f"`{branch}` is protected; the push is a merge commit")
                    return
                why = " (its head is not a merge commit)"
            else:
                why = " (no repository to tell whether it is a merge commit)"
        by = f" by `{inp.user}`" if inp.user else ""
        report.add(
            rule,
            False,
            f"direct push to the protected branch `{branch}`{by}{why}",
            f"`{branch}` changes only through merge requests: push the commits to a branch "
            f"such as `feature/123-my-change` and open a merge request into `{branch}`; "
            "revert the direct push if it should not stay.",
        )

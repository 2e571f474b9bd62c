"""What every governor shares: its policy, its input, and how a verdict reaches GitLab.

A governor is an :class:`~agents.runtime.agent.Agent` whose manifest may carry a
``policy:`` mapping, validated at construction by the governor's own pydantic model
(a mistake stops the agent from starting, naming the field). A task's ``policy``
parameter overrides it for that task. :meth:`Governor.check` fills a
:class:`~agents.governors.report.Report`; :meth:`Governor.handle` turns it into

* a commit status ``bar/<agent>`` (``success`` or ``failed``) on the checked sha,
* a note on the merge request (on a push: on the issue the branch names, failures
  only), and
* the task's result: metrics and a ``report`` output, or, when a rule is broken, an
  :class:`~agents.runtime.agent.AgentFault` with the governor's violation code whose
  actions still go out.

The checks are blocking (git, test runs), so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agents.governors.inputs import GovernorInput, parse_task
from agents.governors.report import Report
from agents.runtime.agent import ActionRequest, Agent, AgentFault, TaskOutcome
from agents.runtime.manifest import AgentManifest, builtin_manifests_dir, load_manifest
from buildkit.contracts.events import ActionKind, AgentTask
from buildkit.errors import ConfigError

__all__ = [
    "BAD_POLICY",
    "Governor",
    "GovernorPolicy",
    "GovernorPolicyError",
    "issue_in_branch",
    "load_policy",
]

#: Fault code of a task whose ``policy`` override is invalid.
BAD_POLICY = "governor.bad_policy"
# An issue number at the start of a branch name's last part: feature/123-login, 123-login.
_BRANCH_ISSUE = re.compile(r"(?:^|/)(\d+)(?:-|$)")


class GovernorPolicyError(ConfigError):
    """A governor's policy (manifest ``policy:``) is invalid; names the field."""


class GovernorPolicy(BaseModel):
    """Policy fields every governor has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Post a note on the merge request when everything passed, not only on failure.
    note_on_success: bool = True


P = TypeVar("P", bound=GovernorPolicy)


def _problems(exc: ValidationError, prefix: str) -> str:
    parts = []
    for error in exc.errors():
        path = prefix
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        ctx = error.get("ctx") or {}
        parts.append(f'field "{path}": {ctx.get("error") or error["msg"]}')
    return "; ".join(parts)


def load_policy(model: type[P], data: Mapping[str, Any], agent: str) -> P:
    """``data`` validated as ``model``; :class:`GovernorPolicyError` naming each bad field."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        allowed = ", ".join(model.model_fields)
        raise GovernorPolicyError(
            f'agent "{agent}": invalid policy: {_problems(exc, "policy")} (policy fields: '
            f"{allowed})"
        ) from exc


def issue_in_branch(branch: str | None) -> int | None:
    """The issue number a branch name starts its last part with (``feature/12-x`` → 12)."""
    match = _BRANCH_ISSUE.search(branch or "")
    return int(match.group(1)) if match else None


class Governor(Agent, Generic[P]):
    """Base class of the governors: set the class attributes, implement :meth:`check`."""

    #: File name (without ``.yaml``) of the built-in manifest used when none is given.
    manifest_file: ClassVar[str]
    #: Fault code of a run that found violations, e.g. ``governor.branch_policy_violation``.
    violation_code: ClassVar[str]
    #: The pydantic model of this governor's ``policy:``.
    policy_model: type[P]

    def __init__(self, manifest: AgentManifest | None = None) -> None:
        if manifest is None:
            manifest = load_manifest(builtin_manifests_dir() / f"{self.manifest_file}.yaml")
        super().__init__(manifest)
        #: The manifest's policy, validated; a task may override fields of it.
        self.policy: P = load_policy(self.policy_model, self.manifest.policy, self.name)

    @property
    def status_name(self) -> str:
        """The commit status this governor sets: ``bar/<agent>``."""
        return f"bar/{self.name}"

    def check(self, inp: GovernorInput, policy: P, report: Report) -> None:
        """Apply the rules to ``inp``, recording each result in ``report`` (blocking)."""
        raise NotImplementedError(f"{type(self).__name__}.check is not implemented")

    async def handle(self, task: AgentTask) -> TaskOutcome:
        """Check the task's input and report the verdict (see the module docstring)."""
        inp = parse_task(task)
        policy = self.policy
        if inp.policy:
            try:
                policy = self.policy_model.model_validate(
                    {**self.policy.model_dump(exclude_unset=True), **inp.policy}
                )
            except ValidationError as exc:
                raise AgentFault(BAD_POLICY, f"parameter {_problems(exc, 'policy')}") from exc
        report = Report(governor=self.name, subject=inp.describe(), sha=inp.head)
        if inp.deleted:
            report.skip("push", f"`{inp.branch or inp.ref}` was deleted: nothing to check")
            return TaskOutcome(metrics={"violations": 0.0}, outputs={"report": report.to_json()})
        # On a task timeout the thread is abandoned, not killed; its git and test
        # subprocesses end at their own timeouts.
        await asyncio.to_thread(self.check, inp, policy, report)
        report.metrics["violations"] = float(len(report.violations))
        actions = self.actions(inp, policy, report)
        if report.violations:
            raise AgentFault(self.violation_code, report.summary(), actions=actions)
        return TaskOutcome(
            metrics=report.metrics, outputs={"report": report.to_json()}, actions=actions
        )

    def actions(self, inp: GovernorInput, policy: P, report: Report) -> list[ActionRequest]:
        """The commit status and note for ``report``; none without a GitLab project."""
        if inp.project_id is None:
            return []
        failed = bool(report.violations)
        out = []
        if report.sha:
            out.append(
                ActionRequest(
                    kind=ActionKind.COMMIT_STATUS,
                    project_id=inp.project_id,
                    sha=report.sha,
                    state="failed" if failed else "success",
                    title=self.status_name,
                    body=report.status_description(),
                )
            )
        if inp.kind == "merge_request" and inp.merge_request_iid is not None:
            if failed or policy.note_on_success:
                out.append(
                    ActionRequest(
                        kind=ActionKind.MERGE_REQUEST_NOTE,
                        project_id=inp.project_id,
                        target_iid=inp.merge_request_iid,
                        body=report.markdown(),
                    )
                )
        elif failed and (issue := issue_in_branch(inp.branch)) is not None:
            # A push has no merge request to comment on; the issue it works on is
            # where its author looks.
            out.append(
                ActionRequest(
                    kind=ActionKind.ISSUE_NOTE,
                    project_id=inp.project_id,
                    target_iid=issue,
                    body=report.markdown(),
                )
            )
        return out

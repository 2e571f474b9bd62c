"""What a governor is asked to check, read from one task's ``parameters_json``.

A governor's task comes either from the workflow engine, whose parameters carry the
run's ``workflow_inputs`` and, when a GitLab webhook started the run, the raw webhook
body in ``workflow_inputs["gitlab.event"]``; or from a person or script, who passes
the fields directly. Both end up as one :class:`GovernorInput`::

    {"workflow_inputs": {"gitlab.event": "{\\"object_kind\\": \\"merge_request\\", ...}"}}
    {"repository": "/srv/git/app.git", "branch": "feature/12-login", "head": "main"}
    {"checkout": "/home/me/app", "base": "v1.2.0"}

A tag push (``object_kind`` ``tag_push``), like any kind but ``merge_request`` and
``push``, is a ``governor.unsupported_event`` fault for every governor: no rule is
about tags, and the tagged commit was checked when it was pushed or merged.

Direct fields win over the event's, so a caller can re-check an event against
another commit. ``policy`` (a mapping) overrides the governor's manifest policy for
this one task. Any other key is an error that lists the accepted ones: a typo must
not silently check the wrong thing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.runtime.agent import AgentFault
from agents.runtime.parameters import json_object, task_parameters, validated
from buildkit.contracts.events import AgentTask

__all__ = [
    "BAD_INPUT",
    "UNSUPPORTED_EVENT",
    "ZERO_SHA",
    "GovernorInput",
    "from_event",
    "parse_task",
]

#: Fault code of a task whose parameters are missing a field or malformed.
BAD_INPUT = "governor.bad_input"
#: Fault code of a GitLab event kind a governor has nothing to check on (e.g. a note).
UNSUPPORTED_EVENT = "governor.unsupported_event"
#: GitLab's ``before`` of a new branch and ``after`` of a deleted one.
ZERO_SHA = "0" * 40

# Keys the workflow engine puts around every task's parameters; not governor fields.
_ENVELOPE = frozenset({"run_id", "workflow_id", "stage", "workflow_inputs", "outputs", "event"})


class GovernorInput(BaseModel):
    """One thing to check: a merge request, a push, or a checkout named by hand."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["merge_request", "push", "manual"] = "manual"
    #: GitLab project the commit status and notes go to; without it no actions are asked for.
    project_id: int | None = None
    merge_request_iid: int | None = None
    #: The merge request's source branch, or the pushed branch.
    branch: str | None = None
    #: The merge request's target branch.
    target_branch: str | None = None
    #: The merge request comes from another project (a fork): its source branch is not
    #: in the target project that is cloned, only GitLab's ``refs/merge-requests/<iid>/head``.
    fork: bool = False
    #: The pushed ref as GitLab wrote it (``refs/heads/x``, ``refs/tags/v1``).
    ref: str | None = None
    title: str = ""
    description: str = ""
    #: A git URL or path to clone (the event's ``project.git_http_url``).
    repository: str | None = None
    #: An existing working tree to check in place, instead of cloning ``repository``:
    #: its files are read as they are on disk (``head`` only bounds the history read).
    checkout: str | None = None
    #: The revision to check: the MR's last commit, the push's ``after``. A merge
    #: request without it is checked at its source branch's tip (see
    #: :func:`~agents.governors.checkout.workspace`), never at the clone's ``HEAD``.
    head: str | None = None
    #: The revision the change starts from: the push's ``before``; for a merge request
    #: the target branch is used when this is not given.
    base: str | None = None
    default_branch: str | None = None
    #: Username of whoever pushed or opened the merge request.
    user: str | None = None
    #: The push deleted the branch (``after`` is all zeros): nothing to check.
    deleted: bool = False
    policy: dict[str, Any] = Field(default_factory=dict)

    def need(self, name: str, why: str) -> Any:
        """The value of field ``name``; a ``governor.bad_input`` fault saying ``why`` if unset."""
        value = getattr(self, name)
        if value in (None, ""):
            raise AgentFault(BAD_INPUT, f'missing "{name}": {why}')
        return value

    def describe(self) -> str:
        """What is being checked, for notes: ``merge request !3 (`a` → `b`)``."""
        if self.kind == "merge_request":
            iid = f" !{self.merge_request_iid}" if self.merge_request_iid is not None else ""
            return f"merge request{iid} (`{self.branch}` → `{self.target_branch}`)"
        if self.kind == "push":
            return f"push to `{self.branch or self.ref}`"
        return f"`{self.checkout or self.repository or self.branch or 'input'}`"


def parse_task(task: AgentTask) -> GovernorInput:
    """The :class:`GovernorInput` of ``task``; a ``governor.bad_input`` fault naming the
    field when the parameters are not usable."""
    params = task_parameters(task, BAD_INPUT)
    fields: dict[str, Any] = {}
    event = _event(params)
    if event is not None:
        fields.update(from_event(event))
    workflow_inputs = params.get("workflow_inputs")
    if isinstance(workflow_inputs, dict) and "project_id" not in fields:
        project = workflow_inputs.get("gitlab.project_id")
        if project is not None:
            fields["project_id"] = project
    unknown = sorted(set(params) - _ENVELOPE - set(GovernorInput.model_fields))
    if unknown:
        allowed = ", ".join(GovernorInput.model_fields)
        raise AgentFault(
            BAD_INPUT, f"unknown parameter(s) {', '.join(unknown)} (allowed: {allowed})"
        )
    fields.update({k: v for k, v in params.items() if k in GovernorInput.model_fields})
    return validated(GovernorInput, fields, BAD_INPUT)


def _event(params: dict[str, Any]) -> dict[str, Any] | None:
    """The GitLab webhook body: ``workflow_inputs["gitlab.event"]`` or a direct ``event``."""
    raw: Any = params.get("event")
    workflow_inputs = params.get("workflow_inputs")
    if raw is None and isinstance(workflow_inputs, dict):
        raw = workflow_inputs.get("gitlab.event")
    return json_object(raw, "gitlab.event", BAD_INPUT)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def from_event(payload: dict[str, Any]) -> dict[str, Any]:
    """:class:`GovernorInput` fields from a GitLab merge request or push webhook body."""
    kind = payload.get("object_kind") or payload.get("event_name")
    project = _dict(payload.get("project"))
    common = {
        "repository": project.get("git_http_url"),
        "default_branch": project.get("default_branch"),
        "project_id": project.get("id") or payload.get("project_id"),
    }
    if kind == "merge_request":
        attrs = _dict(payload.get("object_attributes"))
        source, target = attrs.get("source_project_id"), attrs.get("target_project_id")
        return {
            **common,
            "kind": "merge_request",
            "project_id": project.get("id") or attrs.get("target_project_id"),
            "merge_request_iid": attrs.get("iid"),
            "branch": attrs.get("source_branch"),
            "target_branch": attrs.get("target_branch"),
            "fork": source is not None and target is not None and source != target,
            "title": attrs.get("title") or "",
            "description": attrs.get("description") or "",
            "head": _dict(attrs.get("last_commit")).get("id"),
            "user": _dict(payload.get("user")).get("username"),
        }
    if kind == "push":
        ref = str(payload.get("ref") or "")
        before, after = payload.get("before"), payload.get("after")
        return {
            **common,
            "kind": "push",
            "ref": ref or None,
            "branch": ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None,
            "head": None if after == ZERO_SHA else (payload.get("checkout_sha") or after),
            "base": None if before == ZERO_SHA else before,
            "deleted": after == ZERO_SHA,
            "user": payload.get("user_username"),
        }
    if kind == "tag_push":
        # A tag names a commit that was checked when it was pushed or merged; no
        # governor has a rule about tags themselves, so there is nothing to check.
        raise AgentFault(
            UNSUPPORTED_EVENT,
            f'GitLab event kind "tag_push" ({payload.get("ref") or "a tag"}) is not checked '
            "by governors: a tag points at a commit already checked when its branch was "
            "pushed or merged; they take merge_request and push events",
        )
    raise AgentFault(
        UNSUPPORTED_EVENT,
        f'GitLab event kind "{kind}" is not checked by governors: they take merge_request '
        "and push events",
    )

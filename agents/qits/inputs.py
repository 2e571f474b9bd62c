"""What a QITS agent is given, read from one task: its parameters and its input artifacts.

The workflow engine sends ``parameters_json`` = ``{run_id, workflow_id, stage,
workflow_inputs, outputs}`` and puts the references of upstream outputs in
``task.inputs`` (artifact name → reference). When a GitLab webhook started the run,
``workflow_inputs`` carries ``gitlab.kind``, ``gitlab.project_id``,
``gitlab.object_iid`` and the raw body in ``gitlab.event``. A person or script may
instead pass the fields of :class:`QitsInput` directly::

    {"workflow_inputs": {"spec": "openapi: 3.0.3\\n...", "gitlab.project_id": "7"}}
    {"src": "file:///srv/bar/artifacts/r1/implementation/src", "policy": {"max_mutants": 8}}

Direct fields win over the workflow's. Any other key is a ``qits.bad_input`` fault
listing the accepted ones: a typo must not silently check the wrong thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.qits.artifacts import ArtifactError, ArtifactStore
from agents.runtime.agent import ActionRequest, AgentFault
from agents.runtime.parameters import json_object, task_parameters, validated
from buildkit.contracts.events import ActionKind, AgentTask

__all__ = ["BAD_INPUT", "INPUT_MISSING", "QitsInput", "parse_task"]

#: Fault code of a task whose parameters are malformed or name an unknown field.
BAD_INPUT = "qits.bad_input"
#: Fault code of a task missing an input artifact (or the reference does not resolve).
INPUT_MISSING = "qits.input_missing"

# Keys the workflow engine puts around every task's parameters.
_ENVELOPE = frozenset({"run_id", "workflow_id", "stage", "workflow_inputs", "outputs"})
# Fields filled from the task itself, never from parameters.
_DERIVED = frozenset({"run_id", "stage", "artifacts", "workflow_inputs", "event", "kind"})


class QitsInput(BaseModel):
    """One QITS task: where it belongs, what it reads, and where its report goes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    stage: str
    #: The run's inputs (all strings when a GitLab event started the run).
    workflow_inputs: dict[str, Any] = Field(default_factory=dict)
    #: Upstream artifacts: name → reference (``task.inputs``).
    artifacts: dict[str, str] = Field(default_factory=dict)
    #: The GitLab webhook body that started the run, parsed.
    event: dict[str, Any] | None = None
    #: GitLab object kind of that event (``issue``, ``merge_request`` …).
    kind: str | None = None
    #: GitLab project notes and wiki pages go to; none: no GitLab actions.
    project_id: int | None = None
    #: The issue or merge request the run came from.
    object_iid: int | None = None
    #: An OpenAPI document: inline YAML/JSON text, a path or a ``file://`` reference.
    spec: str | None = None
    #: A built API (directory with ``app.py``), instead of the ``src/`` input artifact.
    src: str | None = None
    #: Generated tests directory, instead of the ``tests/`` input artifact.
    tests: str | None = None
    #: A directory to scan (security-auditor), instead of ``src/``.
    checkout: str | None = None
    #: Name of the stored performance baseline to compare with (default: per project).
    baseline: str | None = None
    #: Overrides of the agent's manifest policy, for this task.
    policy: dict[str, Any] = Field(default_factory=dict)

    def artifact(self, name: str, store: ArtifactStore, direct: str | None = None) -> Path:
        """The local path of input artifact ``name`` (or of the ``direct`` parameter, which
        wins); a ``qits.input_missing`` fault naming what was given otherwise."""
        reference = direct or self.artifacts.get(name)
        if not reference:
            given = ", ".join(sorted(self.artifacts)) or "none"
            raise AgentFault(
                INPUT_MISSING,
                f'no input artifact "{name}" (inputs given: {given}) — declare it in the '
                "stage's inputs or pass the parameter directly",
            )
        try:
            return store.resolve(reference)
        except ArtifactError as exc:
            raise AgentFault(INPUT_MISSING, f'input "{name}": {exc}') from exc

    def note(self, body: str) -> list[ActionRequest]:
        """A note with ``body`` on the issue or merge request the run came from, if any."""
        if self.project_id is None or self.object_iid is None:
            return []
        kinds = {"issue": ActionKind.ISSUE_NOTE, "merge_request": ActionKind.MERGE_REQUEST_NOTE}
        kind = kinds.get(self.kind or "")
        if kind is None:
            return []
        return [
            ActionRequest(
                kind=kind, project_id=self.project_id, target_iid=self.object_iid, body=body
            )
        ]


def parse_task(task: AgentTask) -> QitsInput:
    """The :class:`QitsInput` of ``task``; a ``qits.bad_input`` fault naming the field
    when the parameters are not usable."""
    params = task_parameters(task, BAD_INPUT)
    direct = set(QitsInput.model_fields) - _DERIVED
    unknown = sorted(set(params) - _ENVELOPE - direct)
    if unknown:
        raise AgentFault(
            BAD_INPUT,
            f"unknown parameter(s) {', '.join(unknown)} (allowed: {', '.join(sorted(direct))})",
        )
    workflow_inputs = params.get("workflow_inputs") or {}
    if not isinstance(workflow_inputs, dict):
        raise AgentFault(BAD_INPUT, '"workflow_inputs" must be a JSON object')
    event = json_object(workflow_inputs.get("gitlab.event"), "gitlab.event", BAD_INPUT)
    attrs = event.get("object_attributes") if event else None
    attrs = attrs if isinstance(attrs, dict) else {}
    project = event.get("project") if event else None
    fields: dict[str, Any] = {
        # A task sent by hand may have no run: its artifacts go under its own id.
        "run_id": task.run_id or params.get("run_id") or f"task-{task.task_id}",
        "stage": task.stage or params.get("stage") or task.agent,
        "workflow_inputs": workflow_inputs,
        "artifacts": dict(task.inputs or {}),
        "event": event,
        "kind": workflow_inputs.get("gitlab.kind") or (event or {}).get("object_kind"),
        "project_id": workflow_inputs.get("gitlab.project_id")
        or (project.get("id") if isinstance(project, dict) else None),
        "object_iid": workflow_inputs.get("gitlab.object_iid") or attrs.get("iid"),
        "spec": workflow_inputs.get("spec"),
    }
    fields.update({k: v for k, v in params.items() if k in direct})
    return validated(QitsInput, fields, BAD_INPUT)

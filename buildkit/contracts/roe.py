"""The workflow engine's (ROE) contracts: commands on ``bar.roe.commands`` and the
events on ``bar.roe.events``, the engine's source of truth.

One record per topic, with an enum ``kind``, rather than a record per kind: a topic
keeps a single value schema (TopicNameStrategy), a run's history reads in one
consumer without a union, and a new kind is an enum symbol, not a new subject.
Fields a kind does not use stay at their defaults.

These live in :mod:`buildkit` (not :mod:`streams.roe`) because the topic catalog
declares which contract each topic carries; the logic that produces and folds them
is :mod:`streams.roe.decider`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from buildkit.contracts.base import Event, register


class WorkflowCommandKind(StrEnum):
    """What a command on ``bar.roe.commands`` asks the engine to do."""

    START = "START"
    CANCEL = "CANCEL"
    RETRY_STAGE = "RETRY_STAGE"


class WorkflowEventKind(StrEnum):
    """What happened to a run; see :mod:`streams.roe.decider` for when each is emitted."""

    WORKFLOW_STARTED = "WORKFLOW_STARTED"
    STAGE_READY = "STAGE_READY"
    STAGE_DISPATCHED = "STAGE_DISPATCHED"
    STAGE_SUCCEEDED = "STAGE_SUCCEEDED"
    STAGE_FAILED = "STAGE_FAILED"
    STAGE_RETRYING = "STAGE_RETRYING"
    STAGE_TIMED_OUT = "STAGE_TIMED_OUT"
    STAGE_RETRY_REQUESTED = "STAGE_RETRY_REQUESTED"
    GATE_FAILED = "GATE_FAILED"
    RESULT_IGNORED = "RESULT_IGNORED"
    COMMAND_REJECTED = "COMMAND_REJECTED"
    WORKFLOW_SUCCEEDED = "WORKFLOW_SUCCEEDED"
    WORKFLOW_FAILED = "WORKFLOW_FAILED"
    WORKFLOW_CANCELLED = "WORKFLOW_CANCELLED"


def run_id_for_trigger(workflow_id: str, trigger_id: str) -> str:
    """The run id a trigger starts: the same trigger delivered twice names the same run.

    The workflow id takes part, so one trigger (a GitLab event) that starts two
    workflows starts two runs.
    """
    digest = hashlib.sha256(f"{workflow_id}\n{trigger_id}".encode()).hexdigest()
    return f"run-{digest[:20]}"


@register
class WorkflowCommand(Event):
    """A request to the workflow engine, on ``bar.roe.commands``, keyed by run id."""

    schema_file = "workflow_command.avsc"

    command_id: str
    run_id: str
    kind: WorkflowCommandKind
    workflow_id: str | None = None
    spec_json: str | None = Field(
        default=None, description="START: the validated WorkflowSpec as JSON"
    )
    inputs: dict[str, str] = Field(default_factory=dict, description="START: workflow inputs")
    stage: str | None = Field(default=None, description="RETRY_STAGE: the stage to retry")
    reason: str | None = None
    trigger_id: str | None = Field(
        default=None, description="START: what triggered the run (run id derives from it)"
    )
    requested_by: str | None = None
    requested_at: datetime


@register
class WorkflowEvent(Event):
    """Something that happened to a workflow run, on ``bar.roe.events``, keyed by run id.

    The events of a run are its state: folding them rebuilds it exactly.
    """

    schema_file = "workflow_event.avsc"

    event_id: str = Field(description="<run_id>:<seq>, unique and deterministic")
    run_id: str
    seq: int = Field(description="1, 2, ... per run, without gaps")
    kind: WorkflowEventKind
    workflow_id: str
    stage: str | None = None
    attempt: int | None = None
    task_id: str | None = None
    agent: str | None = None
    topic: str | None = None
    spec_json: str | None = Field(default=None, description="WORKFLOW_STARTED: the spec as JSON")
    trigger_id: str | None = None
    command_id: str | None = Field(default=None, description="the command that caused this")
    inputs: dict[str, str] = Field(default_factory=dict, description="name to value or reference")
    outputs: dict[str, str] = Field(default_factory=dict, description="artifact name to reference")
    metrics: dict[str, float] = Field(default_factory=dict)
    parameters_json: str | None = Field(
        default=None, description="STAGE_DISPATCHED: the task's parameters"
    )
    reason: str | None = None
    error_code: str | None = None
    retry_at: datetime | None = None
    deadline: datetime | None = None
    at: datetime

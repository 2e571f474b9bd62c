"""What starts a run: GitLab events matched against ``trigger`` entries, cron schedules,
and manual starts. Pure functions: the engine feeds them events and the clock.

A run's id is derived from what triggered it (the GitLab delivery's event id, the cron
fire time, or a manual request id), so the same trigger delivered twice starts one run:
the decider ignores a start for a run id it already has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from croniter import croniter

from buildkit.contracts.events import GitLabEvent
from buildkit.contracts.roe import run_id_for_trigger
from streams.roe.model import TriggerSpec, WorkflowSpec

# Trigger names use past tense ("issue.created"); GitLab's webhook actions do not ("open").
_ACTION_ALIASES = {
    "created": "open",
    "opened": "open",
    "closed": "close",
    "reopened": "reopen",
    "updated": "update",
    "merged": "merge",
    "approved": "approved",
}


@dataclass(frozen=True)
class TriggerMatch:
    """A run to start: which workflow, under which run id, with which inputs."""

    workflow_id: str
    run_id: str
    trigger_id: str
    inputs: dict[str, str]


def run_id_for(workflow_id: str, trigger_id: str) -> str:
    """The run id for ``trigger_id``: the same trigger always gives the same run."""
    return run_id_for_trigger(workflow_id, trigger_id)


def _normalize_kind(kind: str) -> str:
    return kind.strip().lower().replace("-", "_").replace(" ", "_")


def _normalize_action(action: str | None) -> str | None:
    if action is None:
        return None
    action = action.strip().lower()
    return _ACTION_ALIASES.get(action, action)


def event_matches(trigger: TriggerSpec, event: GitLabEvent) -> bool:
    """True when ``event`` is of the trigger's kind (and action) and has all its labels."""
    if trigger.event is None:
        return False
    kind, _, action = trigger.event.partition(".")
    if _normalize_kind(kind) != _normalize_kind(event.kind):
        return False
    if action and _normalize_action(action) != _normalize_action(event.action):
        return False
    have = {label.lower() for label in event.labels}
    return all(label.lower() in have for label in trigger.labels)


def gitlab_inputs(event: GitLabEvent) -> dict[str, str]:
    """The run inputs a GitLab event provides (its normalized fields and the raw body)."""
    fields = {
        "gitlab.event_id": event.event_id,
        "gitlab.kind": event.kind,
        "gitlab.action": event.action,
        "gitlab.project_id": event.project_id,
        "gitlab.project_path": event.project_path,
        "gitlab.object_iid": event.object_iid,
        "gitlab.ref": event.ref,
        "gitlab.author": event.author,
        "gitlab.labels": ",".join(event.labels) if event.labels else None,
        "gitlab.event": event.raw_json,
    }
    return {k: str(v) for k, v in fields.items() if v is not None}


def match_event(workflows: Iterable[WorkflowSpec], event: GitLabEvent) -> list[TriggerMatch]:
    """Every workflow this GitLab event starts (at most one run per workflow)."""
    matches = []
    trigger_id = f"gitlab:{event.event_id}"
    for spec in workflows:
        if any(event_matches(trigger, event) for trigger in spec.trigger):
            matches.append(
                TriggerMatch(
                    spec.workflow_id,
                    run_id_for(spec.workflow_id, trigger_id),
                    trigger_id,
                    gitlab_inputs(event),
                )
            )
    return matches


def due_cron_fires(
    spec: WorkflowSpec,
    last_checked: datetime,
    now: datetime,
    *,
    max_catch_up: int = 1,
) -> list[TriggerMatch]:
    """Runs due for ``spec``'s cron triggers in ``(last_checked, now]``.

    After downtime only the latest ``max_catch_up`` missed fires per trigger start,
    so an engine that was down for a day does not start a storm of runs.
    """
    matches: list[TriggerMatch] = []
    for trigger in spec.trigger:
        if trigger.cron is None:
            continue
        fires: list[datetime] = []
        schedule = croniter(trigger.cron, last_checked)
        while True:
            fire = schedule.get_next(datetime)
            if fire > now:
                break
            fires.append(fire)
            if len(fires) > max_catch_up:
                fires.pop(0)
        for fire in fires:
            trigger_id = f"cron:{trigger.cron}:{fire.isoformat()}"
            matches.append(
                TriggerMatch(
                    spec.workflow_id,
                    run_id_for(spec.workflow_id, trigger_id),
                    trigger_id,
                    {"cron.schedule": trigger.cron, "cron.fire_time": fire.isoformat()},
                )
            )
    return matches


def manual_match(spec: WorkflowSpec, request_id: str, inputs: dict[str, str]) -> TriggerMatch:
    """A manual start (CLI or API); ``request_id`` makes a retried request idempotent."""
    trigger_id = f"manual:{request_id}"
    return TriggerMatch(
        spec.workflow_id, run_id_for(spec.workflow_id, trigger_id), trigger_id, inputs
    )

"""Triggers: GitLab events and cron schedules start runs, once per trigger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from buildkit.contracts.events import GitLabEvent
from streams.roe.model import StageSpec, TriggerSpec, WorkflowSpec
from streams.roe.triggers import (
    due_cron_fires,
    event_matches,
    manual_match,
    match_event,
    run_id_for,
)

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def spec(*triggers: TriggerSpec) -> WorkflowSpec:
    return WorkflowSpec(
        name="Feature Development Workflow",
        version="0.1.0",
        trigger=triggers,
        stages=(StageSpec(name="api-design", agent="api-first-enforcer"),),
    )


def gitlab(kind: str, action: str | None, labels: list[str], event_id: str = "e-1") -> GitLabEvent:
    return GitLabEvent(
        event_id=event_id,
        kind=kind,
        action=action,
        project_id=42,
        project_path="platform/users",
        object_iid=7,
        labels=labels,
        occurred_at=T0,
        received_at=T0,
        raw_json='{"object_kind": "issue"}',
    )


def test_issue_created_with_label_matches_an_opened_issue():
    trigger = TriggerSpec(event="issue.created", labels=("feature",))
    assert event_matches(trigger, gitlab("issue", "open", ["feature", "backend"]))
    assert not event_matches(trigger, gitlab("issue", "open", ["bug"]))
    assert not event_matches(trigger, gitlab("issue", "close", ["feature"]))
    assert not event_matches(trigger, gitlab("merge_request", "open", ["feature"]))
    assert event_matches(TriggerSpec(event="push"), gitlab("push", None, []))


def test_the_same_delivery_twice_gives_the_same_run_and_the_event_as_input():
    workflow = spec(TriggerSpec(event="issue.created", labels=("feature",)))
    first = match_event([workflow], gitlab("issue", "open", ["feature"], "uuid-1"))
    again = match_event([workflow], gitlab("issue", "open", ["feature"], "uuid-1"))
    other = match_event([workflow], gitlab("issue", "open", ["feature"], "uuid-2"))
    assert first == again and len(first) == 1
    assert first[0].run_id != other[0].run_id
    assert first[0].run_id.startswith("run-")
    assert first[0].inputs["gitlab.object_iid"] == "7"
    assert first[0].inputs["gitlab.event"] == '{"object_kind": "issue"}'


def test_cron_fires_once_per_schedule_point_and_catches_up_only_the_latest():
    workflow = spec(TriggerSpec(cron="*/5 * * * *"))
    fires = due_cron_fires(workflow, T0, T0 + timedelta(minutes=5))
    assert [m.inputs["cron.fire_time"] for m in fires] == [(T0 + timedelta(minutes=5)).isoformat()]
    assert due_cron_fires(workflow, T0 + timedelta(minutes=5), T0 + timedelta(minutes=9)) == []
    after_downtime = due_cron_fires(workflow, T0, T0 + timedelta(hours=2), max_catch_up=1)
    assert len(after_downtime) == 1
    assert after_downtime[0].inputs["cron.fire_time"] == (T0 + timedelta(hours=2)).isoformat()
    assert (
        after_downtime[0].run_id
        == due_cron_fires(workflow, T0 + timedelta(hours=1, minutes=56), T0 + timedelta(hours=2))[
            0
        ].run_id
    )


def test_manual_starts_are_idempotent_per_request_id():
    workflow = spec()
    a = manual_match(workflow, "req-1", {"issueId": "123"})
    assert a == manual_match(workflow, "req-1", {"issueId": "123"})
    assert a.run_id != manual_match(workflow, "req-2", {}).run_id
    assert a.run_id == run_id_for(workflow.workflow_id, "manual:req-1")

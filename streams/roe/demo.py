"""The ROE part of ``make demo``: a GitLab ``issue`` event labelled ``feature`` starts the
Feature Development Workflow, which runs stage by stage on the embedded stack, with a
live timeline of ``bar.roe.events`` and a closing summary.

The ROE worker here is the real engine (in this process, a thread); the agents are
simulated (:mod:`agents.simulated`) until the agent runtime and the built-in agents
exist, and the demo says so.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from agents.simulated import SimulatedAgents
from buildkit.catalog import default_catalog
from buildkit.contracts.events import GitLabEvent
from buildkit.contracts.roe import WorkflowEvent, WorkflowEventKind
from buildkit.producer import TypedProducer
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from streams.roe.engine import EVENTS, RoeEngine
from streams.roe.spec import builtin_workflows, load_workflow
from streams.roe.triggers import match_event

K = WorkflowEventKind
_STYLE = {
    K.WORKFLOW_STARTED: "bold cyan",
    K.STAGE_DISPATCHED: "yellow",
    K.STAGE_SUCCEEDED: "green",
    K.WORKFLOW_SUCCEEDED: "bold green",
    K.WORKFLOW_FAILED: "bold red",
    K.GATE_FAILED: "red",
    K.STAGE_FAILED: "red",
}


def issue_event() -> GitLabEvent:
    """A GitLab issue opened with the ``feature`` label, as the webhook connector emits it."""
    now = datetime.now(UTC).replace(microsecond=0)
    raw = {
        "object_kind": "issue",
        "event_type": "issue",
        "user": {"username": "ada"},
        "project": {"id": 4200, "path_with_namespace": "platform/users-api"},
        "object_attributes": {
            "iid": 123,
            "action": "open",
            "title": "Users API: GET /api/users/{id}",
        },
        "labels": [{"title": "feature"}],
    }
    return GitLabEvent(
        event_id=f"demo-{uuid.uuid4()}",
        kind="issue",
        action="open",
        project_id=4200,
        project_path="platform/users-api",
        object_id=900123,
        object_iid=123,
        labels=["feature"],
        author="ada",
        occurred_at=now,
        received_at=now,
        raw_json=json.dumps(raw),
    )


def run_roe_demo(settings: Settings, console: Console, *, timeout_s: float = 60) -> bool:
    """Run the feature workflow from a GitLab event; True when it succeeded."""
    catalog = default_catalog()
    apply_topics(settings, catalog)
    spec = load_workflow(builtin_workflows()[0])
    console.print(
        f"[bold cyan]▸[/bold cyan] ROE: workflow [bold]{spec.name}[/bold] ({spec.workflow_id})"
    )
    agents = SimulatedAgents(settings, [stage.agent for stage in spec.stages])
    agents.start()
    agents.ready.wait(30)
    console.print(
        "  agents are [yellow]simulated[/yellow] (agents.simulated) until the agent runtime lands"
    )
    engine = RoeEngine(settings, workflows=[spec])
    stop = threading.Event()
    worker = threading.Thread(target=engine.run, args=(stop,), name="roe-engine", daemon=True)
    tail = _tail_from_end(settings)
    worker.start()
    event = issue_event()
    [match] = match_event([spec], event)
    run_id = match.run_id
    with TypedProducer(settings, source="demo-gitlab-webhook") as producer:
        producer.produce("bar.gitlab.events", event, key=str(event.project_id))
    console.print(
        f"  GitLab issue #{event.object_iid} opened with label [bold]feature[/bold] → run {run_id}"
    )
    serde = SerdeRegistry(settings, catalog).for_topic(EVENTS)
    began = time.monotonic()
    done_kind: WorkflowEventKind | None = None
    stage_started: dict[str, float] = {}
    durations: dict[str, float] = {}
    try:
        while time.monotonic() - began < timeout_s and done_kind is None:
            msg = tail.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            ev = serde.decode(msg.value())
            assert isinstance(ev, WorkflowEvent)
            if ev.run_id != run_id:
                continue
            elapsed = time.monotonic() - began
            if ev.kind is K.STAGE_DISPATCHED and ev.stage:
                stage_started[ev.stage] = elapsed
            if ev.kind is K.STAGE_SUCCEEDED and ev.stage:
                durations[ev.stage] = elapsed - stage_started.get(ev.stage, elapsed)
            style = _STYLE.get(ev.kind, "dim")
            detail = ev.stage or ""
            if ev.kind is K.STAGE_DISPATCHED:
                detail += f" → {ev.topic} (task {ev.task_id})"
            if ev.outputs:
                detail += " outputs: " + ", ".join(ev.outputs)
            if ev.reason:
                detail += f" — {ev.reason}"
            console.print(
                f"  {elapsed:6.3f}s  #{ev.seq:<3} [{style}]{ev.kind.value:<20}[/{style}] {detail}"
            )
            if ev.kind in (K.WORKFLOW_SUCCEEDED, K.WORKFLOW_FAILED, K.WORKFLOW_CANCELLED):
                done_kind = ev.kind
    finally:
        stop.set()
        worker.join(20)
        engine.close()
        tail.close()
        agents.halt()
    table = Table("stage", "agent", "time", title=f"run {run_id}")
    for stage in spec.stages:
        seconds = durations.get(stage.name)
        table.add_row(
            stage.name, stage.agent, "-" if seconds is None else f"{seconds * 1000:.0f} ms"
        )
    console.print(table)
    ok = done_kind is K.WORKFLOW_SUCCEEDED
    verdict = "[green]succeeded[/green]" if ok else f"[red]{done_kind or 'did not finish'}[/red]"
    replay = f"buildkit replay bar.roe.events --filter run_id={run_id} --out -"
    console.print(f"  workflow {verdict}; its timeline: {replay}")
    return ok


def _tail_from_end(settings: Settings) -> Consumer:
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": "roe-demo-tail", "fetch.wait.max.ms": 10, "log_level": 0}
        )
    )
    md = consumer.list_topics(EVENTS, timeout=settings.client_timeout_s)
    consumer.assign(
        [
            TopicPartition(
                EVENTS, p, consumer.get_watermark_offsets(TopicPartition(EVENTS, p), timeout=10)[1]
            )
            for p in md.topics[EVENTS].partitions
        ]
    )
    return consumer

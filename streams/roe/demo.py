"""The ROE part of ``make demo``: GitLab webhook deliveries, POSTed over HTTP to the
dev stack's webhook connector, start workflows on the embedded stack, shown live from
``bar.roe.events``.

* An ``issue`` opened with the ``feature`` label, an OpenAPI document attached in its
  description, starts the Feature Development Workflow: the QITS agents
  (:mod:`agents.qits`, in-process runners) validate the spec, generate tests, build
  the API and hold it to the quality gate; a final report (coverage, mutation score,
  vulnerabilities, time per stage) follows, then the run's events are replayed from
  the audit archive.
* Two merge requests start Merge Request Governance: the governors branch-policy and
  version-sync (real agents on the runtime, served here by in-process runners) check
  a real git repository the demo builds; one request conforms, one does not. Their
  GitLab actions (commit statuses, notes) are recorded on ``bar.gitlab.actions``.

The engine is the real one (in this process, a thread).
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from agents.governors.branch_policy import BranchPolicyAgent
from agents.governors.version_sync import VersionSyncAgent
from agents.qits import (
    ApiBuilderAgent,
    ApiFirstEnforcerAgent,
    QualityGateEnforcerAgent,
    TestGeneratorAgent,
)
from agents.runtime.agent import Agent
from agents.runtime.inprocess import serving
from buildkit.catalog import default_catalog
from buildkit.contracts.events import ActionKind
from buildkit.contracts.roe import WorkflowEvent, WorkflowEventKind
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from connectors.gitlab.stack import webhook_url
from streams.roe.demo_gitlab import (
    SPEC,
    deliver,
    demo_repository,
    issue_delivery,
    merge_request_delivery,
)
from streams.roe.engine import EVENTS, RoeEngine
from streams.roe.model import WorkflowSpec
from streams.roe.spec import builtin_workflows, load_workflow
from streams.roe.triggers import run_id_for

K = WorkflowEventKind
RESULTS = "bar.tasks.results"
FEATURE = "feature-development-workflow@0.1.0"
MR_GOVERNANCE = "merge-request-governance@0.1.0"
_STYLE = {
    K.WORKFLOW_STARTED: "bold cyan",
    K.STAGE_DISPATCHED: "yellow",
    K.STAGE_SUCCEEDED: "green",
    K.WORKFLOW_SUCCEEDED: "bold green",
    K.WORKFLOW_FAILED: "bold red",
    K.GATE_FAILED: "red",
    K.STAGE_FAILED: "red",
}


def run_roe_demo(settings: Settings, console: Console, *, timeout_s: float = 60) -> bool:
    """Deliver GitLab webhooks over HTTP and follow the workflows they start; True when
    every run ended as expected (the feature run and the conforming merge request
    succeed, the non-conforming one is refused by branch-policy)."""
    catalog = default_catalog()
    apply_topics(settings, catalog)
    specs = {spec.workflow_id: spec for spec in map(load_workflow, builtin_workflows())}
    feature, governance = specs[FEATURE], specs[MR_GOVERNANCE]
    console.print(
        f"[bold cyan]▸[/bold cyan] ROE: GitLab deliveries over HTTP to {webhook_url(settings)}"
    )
    engine = RoeEngine(settings, workflows=[feature, governance])
    stop = threading.Event()
    worker = threading.Thread(target=engine.run, args=(stop,), name="roe-engine", daemon=True)
    tail = _tail_from_end(settings)
    worker.start()
    serde = SerdeRegistry(settings, catalog).for_topic(EVENTS)
    ok = True
    stack = ExitStack()
    try:
        # 1. An issue opened with the `feature` label, its API spec attached, starts the
        # feature workflow; the QITS agents run each stage for real.
        data_dir = settings.data_dir.absolute()
        qits: list[Agent] = [
            ApiFirstEnforcerAgent(data_dir=data_dir),
            TestGeneratorAgent(data_dir=data_dir),
            ApiBuilderAgent(data_dir=data_dir),
            QualityGateEnforcerAgent(data_dir=data_dir),
        ]
        stack.enter_context(serving(settings, qits))
        console.print(
            f"\n[bold]Feature Development Workflow[/bold] ({feature.workflow_id}): "
            "the QITS agents on the runtime"
        )
        key = f"demo-{uuid.uuid4()}"
        issue = issue_delivery(123, "Pet store API", SPEC.read_text(encoding="utf-8"))
        deliver(settings, "Issue Hook", issue, key)
        run_id = run_id_for(feature.workflow_id, f"gitlab:{key}")
        console.print(
            f"  POST Issue Hook: issue #123 opened with label [bold]feature[/bold], "
            f"{SPEC.name} attached → 2xx after the broker's ack → run {run_id}"
        )
        followed = _follow(tail, serde, {run_id}, console, max(timeout_s, 180))
        _stage_table(console, feature, followed, run_id)
        ok &= _verdict(console, run_id, followed.ends.get(run_id), K.WORKFLOW_SUCCEEDED)
        ok &= _replay_from_archive(settings, console, run_id, followed.seen.get(run_id, 0))

        # 2. Merge requests run the governors, real agents on the runtime.
        console.print(
            f"\n[bold]Merge Request Governance[/bold] ({governance.workflow_id}): "
            "branch-policy and version-sync on a real git checkout"
        )
        governors = serving(settings, [BranchPolicyAgent(), VersionSyncAgent()])
        stack.enter_context(governors)
        repo = demo_repository(settings.data_dir.absolute() / "demo")
        conforming = merge_request_delivery(repo, 7)
        stray = merge_request_delivery(repo, 8, stray=True)
        expected = {}
        for body, verdict in ((conforming, K.WORKFLOW_SUCCEEDED), (stray, K.WORKFLOW_FAILED)):
            key = f"demo-{uuid.uuid4()}"
            deliver(settings, "Merge Request Hook", body, key)
            mr_run = run_id_for(governance.workflow_id, f"gitlab:{key}")
            expected[mr_run] = verdict
            attrs = body["object_attributes"]
            console.print(
                f"  POST Merge Request Hook: !{attrs['iid']} {attrs['source_branch']} → "
                f"{attrs['target_branch']} → run {mr_run}"
            )
        followed = _follow(tail, serde, set(expected), console, timeout_s)
        for mr_run, verdict in expected.items():
            ok &= _verdict(console, mr_run, followed.ends.get(mr_run), verdict)
        # A run fails as soon as one stage does; its other stages' tasks still finish
        # and ask for their actions, which land before their results.
        _await_results(settings, followed.tasks, timeout_s)
        _show_actions(settings, console, {run_id, *expected})
    finally:
        stop.set()
        worker.join(20)
        engine.close()
        tail.close()
        stack.close()
    return ok


@dataclass
class _Followed:
    """What the timeline saw: how each run ended, each stage's duration and metrics, and
    how many events each run had."""

    ends: dict[str, WorkflowEventKind] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    tasks: set[str] = field(default_factory=set)


def _follow(
    tail: Consumer, serde: Any, run_ids: set[str], console: Console, timeout_s: float
) -> _Followed:
    """Print the events of ``run_ids`` as they come until each run ended (or time is up)."""
    began = time.monotonic()
    out = _Followed()
    stage_started: dict[str, float] = {}
    short = {run_id: f"…{run_id[-6:]}" for run_id in run_ids}
    while time.monotonic() - began < timeout_s and len(out.ends) < len(run_ids):
        msg = tail.poll(0.2)
        if msg is None or msg.error() is not None:
            continue
        ev = serde.decode(msg.value())
        if not isinstance(ev, WorkflowEvent) or ev.run_id not in run_ids:
            continue
        out.seen[ev.run_id] = out.seen.get(ev.run_id, 0) + 1
        elapsed = time.monotonic() - began
        if ev.kind is K.STAGE_DISPATCHED and ev.stage:
            stage_started[ev.stage] = elapsed
            if ev.task_id:
                out.tasks.add(ev.task_id)
        if ev.kind is K.STAGE_SUCCEEDED and ev.stage:
            out.durations[ev.stage] = elapsed - stage_started.get(ev.stage, elapsed)
            out.metrics[ev.stage] = dict(ev.metrics)
        style = _STYLE.get(ev.kind, "dim")
        detail = ev.stage or ""
        if ev.kind is K.STAGE_DISPATCHED:
            detail += f" → {ev.topic} (task {ev.task_id})"
        if ev.outputs:
            detail += " outputs: " + ", ".join(ev.outputs)
        if ev.reason:
            detail += f" — {ev.reason}"
        run = f"{short[ev.run_id]} " if len(run_ids) > 1 else ""
        console.print(
            f"  {elapsed:6.3f}s  {run}#{ev.seq:<3} [{style}]{ev.kind.value:<20}[/{style}] {detail}"
        )
        if ev.kind in (K.WORKFLOW_SUCCEEDED, K.WORKFLOW_FAILED, K.WORKFLOW_CANCELLED):
            out.ends[ev.run_id] = ev.kind
    return out


#: The final report's rows: metric (as the quality gate names it) and how to show it.
_REPORT = (
    ("coverage", "coverage", "{:.1f}%"),
    ("mutation_score", "mutation score", "{:.1f}%"),
    ("critical_vulnerabilities", "critical vulnerabilities", "{:.0f}"),
    ("vulnerabilities", "vulnerabilities (all)", "{:.0f}"),
    ("phpcs_violations", "lint violations", "{:.0f}"),
    ("tests_passed", "generated tests passed", "{:.0f}"),
)


def _stage_table(console: Console, spec: WorkflowSpec, followed: _Followed, run_id: str) -> None:
    table = Table("stage", "agent", "time", "metrics", title=f"run {run_id}")
    for stage in spec.stages:
        seconds = followed.durations.get(stage.name)
        metrics = followed.metrics.get(stage.name, {})
        shown = ", ".join(f"{k} {v:g}" for k, v in sorted(metrics.items())[:4])
        table.add_row(
            stage.name,
            stage.agent,
            "-" if seconds is None else f"{seconds:.1f} s",
            shown,
        )
    console.print(table)
    gate = followed.metrics.get("quality-gate", {})
    if gate:
        report = Table("quality gate", "value", title="final report")
        for key, label, fmt in _REPORT:
            if key in gate:
                report.add_row(label, fmt.format(gate[key]))
        console.print(report)


def _replay_from_archive(settings: Settings, console: Console, run_id: str, expected: int) -> bool:
    """Replay the run's events from the audit archive (Postgres), waiting for the
    archiver to catch up; True when the archive holds every event the timeline showed."""
    from buildkit.audit.replay import ArchiveReplay
    from buildkit.replay import parse_bound

    serde = SerdeRegistry(settings, default_catalog()).for_topic(EVENTS)
    deadline = time.monotonic() + 30
    found: list[WorkflowEvent] = []
    while time.monotonic() < deadline:
        replay = ArchiveReplay(settings, EVENTS, parse_bound(None), parse_bound(None))
        try:
            events = [serde.decode(r.value) for r in replay.records()]
        finally:
            replay.close()
        found = [e for e in events if isinstance(e, WorkflowEvent) and e.run_id == run_id]
        if len(found) >= expected:
            break
        time.sleep(0.5)
    kinds = ", ".join(e.kind.value for e in found[:3])
    console.print(
        f"  replayed from the audit archive: {len(found)} of {expected} event(s) of the run "
        f"({kinds}, …), hash-chained in Postgres"
    )
    return len(found) >= expected


def _verdict(
    console: Console, run_id: str, ended: WorkflowEventKind | None, expected: WorkflowEventKind
) -> bool:
    ok = ended is expected
    mark = "[green]as expected[/green]" if ok else f"[red]expected {expected.value}[/red]"
    replay = f"buildkit replay bar.roe.events --filter run_id={run_id} --out -"
    console.print(
        f"  run {run_id}: {ended.value if ended else 'did not finish'} ({mark}); {replay}"
    )
    return ok


def _await_results(settings: Settings, task_ids: set[str], timeout_s: float) -> None:
    """Wait until every task in ``task_ids`` has a result on bar.tasks.results."""
    from buildkit.replay import BrokerReplay, parse_bound

    serde = SerdeRegistry(settings, default_catalog()).for_topic(RESULTS)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        replay = BrokerReplay(settings, RESULTS, parse_bound(None), parse_bound(None))
        try:
            answered = {getattr(serde.decode(r.value), "task_id", None) for r in replay.records()}
        finally:
            replay.close()
        if task_ids <= answered:
            return
        time.sleep(0.5)


def _show_actions(settings: Settings, console: Console, run_ids: set[str]) -> None:
    """The GitLab actions the runs' agents asked for (the quality gate's report on the
    issue, the governors' statuses and notes): recorded on bar.gitlab.actions, for the
    sink to run once BAR_GITLAB_URL and BAR_GITLAB_TOKEN are set."""
    from connectors.gitlab.actions_view import list_actions

    rows = [row for row in list_actions(settings) if row.action.run_id in run_ids]
    table = Table("run", "by", "action", "target", "what", title="GitLab actions recorded")
    for row in rows:
        action = row.action
        on_issue = action.kind is ActionKind.ISSUE_NOTE or action.target == "issue"
        mark = "#" if on_issue else "!"
        target = f"{mark}{action.target_iid}" if action.target_iid else (action.sha or "")[:8]
        what = action.state or (action.body or "").splitlines()[0].lstrip("# ").replace("*", "")
        table.add_row(
            f"…{(action.run_id or '')[-6:]}", action.requested_by, action.kind.value, target, what
        )
    console.print(table)
    console.print(
        f"  {len(rows)} action(s) recorded; with GitLab configured `buildkit gitlab sink` "
        "runs them; list them any time: buildkit gitlab actions"
    )


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

"""The ROE Python API, in the architecture document's shape::

    roe = Roe(settings)
    spec = roe.create_workflow("feature-workflow.yml")
    run_id = roe.execute_workflow(spec.workflow_id, inputs={"issueId": "123"})
    roe.on("task.completed", lambda task: print(task.name, task.status))
    roe.listen(stop)                       # blocks until ``stop`` is set

It is a client of the engine, never the engine itself: starting, cancelling and
retrying are commands on ``bar.roe.commands``; status and history are the fold of
``bar.roe.events`` read back with :class:`~buildkit.replay.BrokerReplay`.

Workflow definitions are recorded in a small registry: one JSON file per workflow
under ``<BAR_DATA_DIR>/roe/workflows/<workflow_id>.json``, next to the built-in ones
shipped with the package. ``execute_workflow`` sends the whole spec in the START
command, so the engine runs any recorded workflow without knowing it in advance;
only *triggers* (GitLab events, cron) need the engine to hold the workflow, and it
holds the built-ins plus the files given as ``python -m streams.roe --workflow FILE``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from buildkit.contracts.roe import (
    WorkflowCommand,
    WorkflowCommandKind,
    WorkflowEvent,
    WorkflowEventKind,
)
from buildkit.errors import BuildKitError
from buildkit.settings import Settings
from streams.roe.model import WorkflowSpec
from streams.roe.spec import builtin_workflows, load_workflow, parse_workflow
from streams.roe.state import RunState, evolve
from streams.roe.triggers import manual_match

__all__ = ["TASK_COMPLETED", "Roe", "TaskCompleted"]

COMMANDS = "bar.roe.commands"
EVENTS = "bar.roe.events"

#: The event name ``Roe.on`` accepts: a stage finished, for good (after its retries).
TASK_COMPLETED = "task.completed"

_COMPLETIONS = {
    WorkflowEventKind.STAGE_SUCCEEDED: "SUCCEEDED",
    WorkflowEventKind.STAGE_FAILED: "FAILED",
}


@dataclass(frozen=True)
class TaskCompleted:
    """What a ``task.completed`` callback receives: a stage of a run that finished."""

    name: str
    status: str
    run_id: str
    workflow_id: str
    attempt: int | None
    task_id: str | None
    reason: str | None


WorkflowSource = WorkflowSpec | Mapping[str, Any] | str | os.PathLike[str]


class Roe:
    """Define, start, stop and follow workflow runs of a running ROE engine."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry_dir = settings.data_dir / "roe" / "workflows"
        self._callbacks: dict[str, list[Callable[[TaskCompleted], None]]] = {}

    # -- definitions -------------------------------------------------------------------
    def create_workflow(self, source: WorkflowSource) -> WorkflowSpec:
        """Validate a workflow and record it; return its spec (``.workflow_id`` names it).

        ``source`` is a :class:`WorkflowSpec`, a mapping of the YAML shape, YAML text (a
        string with a newline), or the path of a YAML file. Raises
        :class:`~streams.roe.errors.WorkflowSpecError` listing every problem. Recording
        the same spec again is a no-op; a different spec under a recorded id is refused:
        runs are told apart by ``name@version``, so a change needs a new version.
        """
        spec = _to_spec(source)
        path = self.registry_dir / f"{spec.workflow_id}.json"
        known = self.workflows().get(spec.workflow_id)
        if known is not None and known != spec:
            raise BuildKitError(
                f'workflow "{spec.workflow_id}" is already recorded with a different '
                "definition — change its version to record the new one"
            )
        if known is None:
            self.registry_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
            tmp.replace(path)
        return spec

    def workflows(self) -> dict[str, WorkflowSpec]:
        """Every known workflow by id: the built-in ones, then the recorded ones."""
        specs = {s.workflow_id: s for s in map(load_workflow, builtin_workflows())}
        if self.registry_dir.is_dir():
            for path in sorted(self.registry_dir.glob("*.json")):
                spec = WorkflowSpec.model_validate_json(path.read_text(encoding="utf-8"))
                specs[spec.workflow_id] = spec
        return specs

    def list_workflows(self) -> list[WorkflowSpec]:
        """Every known workflow, sorted by id."""
        return [spec for _, spec in sorted(self.workflows().items())]

    def workflow(self, workflow_id: str) -> WorkflowSpec:
        """The workflow ``workflow_id``; raises naming the known ids when there is none."""
        specs = self.workflows()
        if workflow_id not in specs:
            known = ", ".join(sorted(specs)) or "none"
            raise BuildKitError(
                f'no workflow "{workflow_id}" (known: {known}) — record it first: '
                "buildkit roe workflows create FILE"
            )
        return specs[workflow_id]

    # -- commands ----------------------------------------------------------------------
    def execute_workflow(
        self,
        workflow_id: str,
        inputs: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> str:
        """Start a run of ``workflow_id``; return its run id.

        The same ``request_id`` always names the same run, so retrying a request whose
        answer was lost starts nothing twice (None: a fresh request).
        """
        spec = self.workflow(workflow_id)
        values = dict(inputs or {})
        missing = [
            i.name for i in spec.inputs if i.required and i.default is None and i.name not in values
        ]
        if missing:
            raise BuildKitError(
                f'workflow "{workflow_id}" needs input(s) {", ".join(missing)} — '
                f"pass --input {missing[0]}=VALUE"
            )
        match = manual_match(spec, request_id or uuid.uuid4().hex, values)
        self._send(
            WorkflowCommand(
                command_id=f"start-{match.trigger_id}",
                run_id=match.run_id,
                kind=WorkflowCommandKind.START,
                workflow_id=spec.workflow_id,
                spec_json=spec.model_dump_json(),
                inputs=match.inputs,
                trigger_id=match.trigger_id,
                requested_by=self.settings.source,
                requested_at=_now(),
            )
        )
        return match.run_id

    def cancel(self, run_id: str, reason: str | None = None) -> None:
        """Ask the engine to cancel ``run_id`` (a finished run is left as it is)."""
        self._send(self._command(run_id, WorkflowCommandKind.CANCEL, reason=reason))

    def retry_stage(self, run_id: str, stage: str, reason: str | None = None) -> None:
        """Ask the engine to retry failed stage ``stage`` of ``run_id``."""
        self._send(
            self._command(run_id, WorkflowCommandKind.RETRY_STAGE, stage=stage, reason=reason)
        )

    def _command(self, run_id: str, kind: WorkflowCommandKind, **fields: Any) -> WorkflowCommand:
        return WorkflowCommand(
            command_id=f"{kind.lower()}-{uuid.uuid4().hex}",
            run_id=run_id,
            kind=kind,
            requested_by=self.settings.source,
            requested_at=_now(),
            **fields,
        )

    def _send(self, command: WorkflowCommand) -> None:
        from buildkit.producer import TypedProducer

        with TypedProducer(self.settings, source=f"{self.settings.source}-roe") as producer:
            producer.produce(COMMANDS, command, key=command.run_id)

    # -- reading back ------------------------------------------------------------------
    def history(self, run_id: str) -> list[WorkflowEvent]:
        """The events of ``run_id`` in order (a duplicate delivery appears once)."""
        return self._events(run_id).get(run_id, [])

    def status(self, run_id: str) -> RunState | None:
        """The state of ``run_id`` as of the last committed event; None if unknown."""
        return _fold(self.history(run_id))

    def runs(self, workflow_id: str | None = None) -> list[RunState]:
        """Every run (of ``workflow_id``, if given), oldest first."""
        states = [_fold(events) for events in self._events(None).values()]
        found = [s for s in states if s is not None]
        if workflow_id is not None:
            found = [s for s in found if s.workflow_id == workflow_id]
        return sorted(found, key=lambda s: (s.started_at_ms, s.run_id))

    def _events(self, run_id: str | None) -> dict[str, list[WorkflowEvent]]:
        from buildkit.catalog import default_catalog
        from buildkit.replay import OPEN, BrokerReplay
        from buildkit.serde import SerdeRegistry

        serde = SerdeRegistry(self.settings, default_catalog()).for_topic(EVENTS)
        wanted = None if run_id is None else run_id.encode()
        by_run: dict[str, dict[int, WorkflowEvent]] = {}
        replay = BrokerReplay(self.settings, EVENTS, OPEN, OPEN)
        try:
            for record in replay.records():
                if wanted is not None and record.key != wanted:
                    continue
                event = serde.decode(record.value)
                assert isinstance(event, WorkflowEvent)
                by_run.setdefault(event.run_id, {}).setdefault(event.seq, event)
        finally:
            replay.close()
        return {run: [seqs[s] for s in sorted(seqs)] for run, seqs in by_run.items()}

    # -- following ---------------------------------------------------------------------
    def on(self, event_name: str, callback: Callable[[TaskCompleted], None]) -> None:
        """Call ``callback`` for every ``event_name`` that :meth:`listen` sees.

        Only ``"task.completed"`` exists: a stage succeeded or failed for good.
        """
        if event_name != TASK_COMPLETED:
            raise BuildKitError(
                f'unknown event "{event_name}" — the one there is: {TASK_COMPLETED}'
            )
        self._callbacks.setdefault(event_name, []).append(callback)

    def listen(
        self,
        stop: threading.Event,
        *,
        ready: threading.Event | None = None,
        poll_s: float = 0.2,
    ) -> None:
        """Follow ``bar.roe.events`` from now on, calling the registered callbacks, until
        ``stop`` is set. ``ready`` is set once positioned: events after it are seen.

        The topic is tailed by an assigned consumer (no group, nothing committed), so
        any number of listeners follow it independently. Older records the broker may
        hand back (its high watermark can lag the real end) are skipped by timestamp.
        """
        from confluent_kafka import Consumer, TopicPartition

        from buildkit.catalog import default_catalog
        from buildkit.kafka import next_batch, require_topics
        from buildkit.serde import SerdeRegistry

        serde = SerdeRegistry(self.settings, default_catalog()).for_topic(EVENTS)
        consumer = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": "bar-roe-listen",  # required by librdkafka; never committed
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 50,
                    "log_level": 0,
                }
            )
        )
        try:
            since_ms = int(datetime.now(UTC).timestamp() * 1000)
            md = require_topics(consumer, self.settings, [EVENTS])
            timeout = self.settings.client_timeout_s
            consumer.assign(
                [
                    TopicPartition(
                        EVENTS,
                        p,
                        consumer.get_watermark_offsets(TopicPartition(EVENTS, p), timeout=timeout)[
                            1
                        ],
                    )
                    for p in sorted(md.topics[EVENTS].partitions)
                ]
            )
            if ready is not None:
                ready.set()
            seen: set[str] = set()  # a completion delivered twice is reported once
            while not stop.is_set():
                for msg in next_batch(consumer, 500, poll_s):
                    if msg.error() is not None or msg.timestamp()[1] < since_ms:
                        continue
                    event = serde.decode(msg.value())
                    assert isinstance(event, WorkflowEvent)
                    if event.kind in _COMPLETIONS and event.event_id not in seen:
                        seen.add(event.event_id)
                        self._dispatch(event)
        finally:
            consumer.close()

    def _dispatch(self, event: WorkflowEvent) -> None:
        status = _COMPLETIONS.get(event.kind)
        if status is None:
            return
        task = TaskCompleted(
            name=event.stage or "",
            status=status,
            run_id=event.run_id,
            workflow_id=event.workflow_id,
            attempt=event.attempt,
            task_id=event.task_id,
            reason=event.reason,
        )
        for callback in self._callbacks.get(TASK_COMPLETED, []):
            callback(task)


def _to_spec(source: WorkflowSource) -> WorkflowSpec:
    if isinstance(source, WorkflowSpec):
        return source
    if isinstance(source, Mapping):
        return parse_workflow(yaml.safe_dump(dict(source), sort_keys=False), "<mapping>")
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{")):
        return parse_workflow(source)
    return load_workflow(Path(source))


def _fold(events: list[WorkflowEvent]) -> RunState | None:
    state: RunState | None = None
    for event in events:
        state = evolve(state, event)
    return state


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)

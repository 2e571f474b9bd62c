"""Runs an :class:`~agents.runtime.agent.Agent` on Kafka.

Consumes ``bar.tasks.<name>`` in group ``bar-agent-<name>``, runs each task
through :func:`~agents.runtime.agent.execute` and produces the result (with the
``replica_id`` that ran it) to ``bar.tasks.results``, keyed by task id, as soon as
the task ends. Offsets are committed per batch, after the batch's results were
acknowledged, so the consumer commits only what was answered: at-least-once. A batch
ends once its tasks took 0.2 s (at least one task; the rest is fetched again), so a
crash re-delivers at most that much, and what was answered is skipped. A
commit the group refuses because it is rebalancing is not fatal: the tasks come back
to their partition's owner, which skips the answered ones (below).

A redelivered task whose result was already emitted is not run again, also when
the redelivery goes to another replica after a crash or rebalance: before handling
the first record of a partition newly assigned to it, the runner catches up with
``bar.tasks.results`` (:class:`~agents.runtime.answered.AnsweredTasks`, whose
docstring states the guarantee and its limits), and it checks every task against
the ids read there and the ones it answered itself.

A task that kills the replicas that start it (memory limit, native crash, hang) is
poison: every task is announced in a RUNNING heartbeat carrying its id before it
runs, and the first record of a newly assigned partition is checked against those
announcements (:mod:`~agents.runtime.attempts`); after ``BAR_DLQ_MAX_ATTEMPTS``
replicas died on it, it gets a FAILED result (``agent.poison_task``) and goes to the
group's dead-letter topic instead of running again.

On start the runner registers the replica on ``bar.agents.registry`` (``agent_id`` is
the replica id, ``active`` true) and sends a STARTING heartbeat; while running, a
background thread sends an ``AgentHeartbeat`` to ``bar.agents.heartbeats`` every
``heartbeat_interval_s``: RUNNING while a task executes, IDLE otherwise, with this
process's CPU and resident memory, the task-topic partitions assigned to the
replica and the backlog waiting in them (see :meth:`TypedConsumer.backlog`). On
stop it sends a DRAINING heartbeat and a registration with ``active`` false.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

from agents.runtime.agent import DEFAULT_TIMEOUT_S, Agent, _now_ms, run_task, task_result
from agents.runtime.answered import DEFAULT_LOOKBACK, AnsweredTasks
from agents.runtime.attempts import POISON_CODE, started_by
from buildkit.catalog import Catalog, TopicSpec, default_catalog
from buildkit.consumer import ConsumedRecord, TypedConsumer
from buildkit.contracts.events import (
    AgentError,
    AgentHeartbeat,
    AgentKind,
    AgentRegistration,
    AgentResult,
    AgentTask,
    GitLabAction,
    ReplicaState,
    TaskStatus,
)
from buildkit.errors import BuildKitError
from buildkit.producer import TypedProducer
from buildkit.settings import Settings

__all__ = [
    "ACTIONS_TOPIC",
    "HEARTBEATS_TOPIC",
    "REGISTRY_TOPIC",
    "RESULTS_TOPIC",
    "AgentRunner",
    "RunnerStats",
]

log = logging.getLogger(__name__)

RESULTS_TOPIC = "bar.tasks.results"
ACTIONS_TOPIC = "bar.gitlab.actions"
#: Seconds of work one batch (one offset commit, one flush) should hold at most.
BATCH_BUDGET_S = 0.2
MAX_BATCH = 200
HEARTBEATS_TOPIC = "bar.agents.heartbeats"
REGISTRY_TOPIC = "bar.agents.registry"


class PoisonTask(BuildKitError):
    """A task that killed every replica that started it (the dead-letter reason)."""


@dataclass
class RunnerStats:
    """What a runner did: tasks executed, redelivered tasks skipped, non-task records ignored."""

    executed: int = 0
    duplicates: int = 0
    ignored: int = 0
    poisoned: int = 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_bytes() -> int:
    """Resident memory of this process; the peak where ``/proc`` is missing."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class AgentRunner:
    """Serves ``agent``'s tasks from Kafka until stopped.

    ``group_id`` defaults to the manifest's ``bar-agent-<name>``. Every task runs
    on one event loop kept for the runner's lifetime, so an agent may hold async
    clients across tasks. ``replica_id`` (default ``<hostname>-<pid>``) keys the
    replica's heartbeats, is its ``agent_id`` in the registry, is stamped on its
    results and is part of its CloudEvents source (``<group>/<replica>``).
    ``dedup_capacity`` task ids are kept for de-duplication, and on start the last
    ``answered_lookback`` results of each results partition are read (see
    :mod:`agents.runtime.answered`).
    """

    def __init__(
        self,
        settings: Settings,
        agent: Agent,
        *,
        catalog: Catalog | None = None,
        group_id: str | None = None,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        dedup_capacity: int = 100_000,
        answered_lookback: int = DEFAULT_LOOKBACK,
        replica_id: str | None = None,
        version: str = "0.1.0",
        heartbeat_interval_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.agent = agent
        self.topic = agent.manifest.task_topic
        self.group_id = group_id or agent.manifest.group_id
        catalog = catalog or default_catalog()
        if self.topic not in catalog:
            catalog = Catalog([*catalog, TopicSpec(self.topic, AgentTask, key_field="task_id")])
        self.catalog = catalog
        self.default_timeout_s = default_timeout_s
        self.dedup_capacity = dedup_capacity
        self.answered_lookback = answered_lookback
        self.stats = RunnerStats()
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.version = version
        self.heartbeat_interval_s = heartbeat_interval_s
        self._busy = False
        self._produce_lock = threading.Lock()
        self._cpu_mark = _cpu_seconds(), time.monotonic()
        self._consumer: TypedConsumer | None = None
        # Set when task partitions are assigned: catch up before their first record.
        self._catch_up_due = True
        self._fresh_partitions: set[int] = set()
        self._current_task: str | None = None
        self._last_cpu = 0.0

    def run(
        self,
        stop: threading.Event | None = None,
        max_tasks: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> RunnerStats:
        """Serve tasks until ``stop`` is set, ``max_tasks`` records were handled
        (duplicates included) or nothing arrived for ``idle_timeout_s``."""
        producer = TypedProducer(
            self.settings, catalog=self.catalog, source=f"{self.group_id}/{self.replica_id}"
        )
        producer.check_topics([RESULTS_TOPIC, ACTIONS_TOPIC, HEARTBEATS_TOPIC, REGISTRY_TOPIC])
        overrides: dict[str, Any] = {
            # A task may run up to its timeout between two polls.
            "max.poll.interval.ms": int(max(300.0, self.default_timeout_s + 60) * 1000),
            # Some brokers (the embedded one) hold every fetch this long: dispatch latency.
            "fetch.wait.max.ms": 100,
        }
        answered: AnsweredTasks | None = None
        try:
            answered = AnsweredTasks(
                self.settings,
                RESULTS_TOPIC,
                lookback=self.answered_lookback,
                capacity=self.dedup_capacity,
            )
            consumer = TypedConsumer(
                self.settings,
                self.group_id,
                [self.topic],
                catalog=self.catalog,
                on_assign=self._on_assign,
                **overrides,
            )
        except BaseException:
            if answered is not None:
                answered.close()
            producer.close()
            raise
        self._consumer = consumer
        self._catch_up_due = True
        self._cpu_mark = _cpu_seconds(), time.monotonic()
        beating = threading.Event()
        beater = threading.Thread(
            target=self._beat, args=(producer, beating), name="bar-agent-heartbeat", daemon=True
        )
        clean = False
        with asyncio.Runner() as loop:

            def handle(record: ConsumedRecord) -> None:
                self._handle(record, loop, producer, answered)

            try:
                self._register(producer, active=True)
                self._heartbeat(producer, ReplicaState.STARTING)
                beater.start()
                # Results are acknowledged (flush) before a batch's offsets are
                # committed. A commit a rebalance voids is not fatal (TypedConsumer): the
                # results are on the broker, so whoever owns the partition next skips them.
                consumer.run(
                    handle,
                    max_records=max_tasks,
                    idle_timeout_s=idle_timeout_s,
                    stop=stop,
                    batch_size=MAX_BATCH,
                    batch_budget_s=BATCH_BUDGET_S,
                    before_commit=producer.flush,
                )
                clean = True
            finally:
                beating.set()
                if beater.is_alive():
                    beater.join()
                try:
                    if clean:
                        self._heartbeat(producer, ReplicaState.DRAINING)
                        self._register(producer, active=False)
                        producer.flush()
                finally:
                    self._consumer = None
                    try:
                        consumer.close()
                        answered.close()
                    finally:
                        producer.close()
        return self.stats

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Called inside the consumer's poll, before any record of ``partitions``."""
        mine = sorted(tp.partition for tp in partitions if tp.topic == self.topic)
        if mine:
            self._catch_up_due = True
            # Their first record may be one a previous owner died on (see .attempts).
            self._fresh_partitions.update(mine)
            log.info("%s: assigned %s partitions %s", self.replica_id, self.topic, mine)

    def _handle(
        self,
        record: ConsumedRecord,
        loop: asyncio.Runner,
        producer: TypedProducer,
        answered: AnsweredTasks,
    ) -> None:
        task = record.value
        if not isinstance(task, AgentTask):
            self.stats.ignored += 1
            log.warning("%s: ignoring %s on %s", self.group_id, type(task).__name__, record.topic)
            return
        if self._catch_up_due:
            # Cleared only once it succeeded: a failed catch-up is tried again on retry.
            read = answered.catch_up()
            self._catch_up_due = False
            log.info(
                "%s: caught up with %s (%d new result(s))", self.replica_id, RESULTS_TOPIC, read
            )
        if task.task_id in answered:
            self.stats.duplicates += 1
            log.info("%s: task %s already answered, not run again", self.group_id, task.task_id)
            return
        if record.partition in self._fresh_partitions:
            self._fresh_partitions.discard(record.partition)
            if self._poison(record, task, producer, answered):
                return
        self._busy, self._current_task = True, task.task_id
        try:
            # Announced before it runs: if this replica dies on it, the next owner knows.
            self._heartbeat(producer, ReplicaState.RUNNING, announce=True)
            execution = loop.run(
                run_task(self.agent, task, default_timeout_s=self.default_timeout_s)
            )
        finally:
            self._busy, self._current_task = False, None
        self._answer(record, execution.result, producer, answered, actions=execution.actions)
        self.stats.executed += 1

    def _answer(
        self,
        record: ConsumedRecord,
        result: AgentResult,
        producer: TypedProducer,
        answered: AnsweredTasks,
        *,
        actions: list[GitLabAction] | None = None,
    ) -> None:
        """Produce ``result`` (with this replica's id) for the task of ``record``, after
        the GitLab actions the task asked for: a result is never seen without them."""
        result = result.model_copy(update={"replica_id": self.replica_id})
        envelope = record.envelope
        if actions:
            with self._produce_lock:
                for action in actions:
                    producer.produce(
                        ACTIONS_TOPIC,
                        action,
                        key=str(action.project_id),
                        correlation_id=envelope.correlation_id,
                        traceparent=envelope.traceparent,
                    )
            # Other topic, other batch: without this wait the result could be acknowledged
            # (and acted on) before its actions are on the log. Outside the lock, so the
            # heartbeat thread keeps beating meanwhile.
            producer.flush()
        with self._produce_lock:
            producer.produce(
                RESULTS_TOPIC,
                result,
                key=result.task_id,
                correlation_id=envelope.correlation_id,
                traceparent=envelope.traceparent,
            )
        # Acknowledged before the batch's offsets are committed (TypedConsumer calls
        # producer.flush first): a crash re-runs, never loses, and a replica that takes
        # the partition over finds the result when it catches up.
        producer.poll(0)
        answered.add(result.task_id)

    def _poison(
        self,
        record: ConsumedRecord,
        task: AgentTask,
        producer: TypedProducer,
        answered: AnsweredTasks,
    ) -> bool:
        """Answer and dead-letter ``task`` instead of running it when
        ``dlq_max_attempts`` other replicas started it and died (see :mod:`.attempts`)."""
        limit = self.settings.dlq_max_attempts
        died_on = started_by(self.settings, task.task_id) - {self.replica_id}
        if len(died_on) < limit:
            return False
        message = (
            f"task {task.task_id} was started by {len(died_on)} replica(s) that never "
            f"answered it (each crashed, was killed or hung): {', '.join(sorted(died_on))}; "
            f"not running it again (limit {limit})"
        )
        log.error("%s: %s", self.replica_id, message)
        error = AgentError(code=POISON_CODE, message=message, retryable=False)
        result = task_result(task, TaskStatus.FAILED, started=_now_ms(), error=error)
        self._answer(record, result, producer, answered)
        if self._consumer is not None:
            self._consumer.dead_letter(record, PoisonTask(message), attempts=len(died_on))
        self.stats.poisoned += 1
        return True

    def _register(self, producer: TypedProducer, *, active: bool) -> None:
        manifest = self.agent.manifest
        registration = AgentRegistration(
            agent_id=self.replica_id,
            name=manifest.name,
            kind=AgentKind(manifest.type.upper()),
            version=self.version,
            capabilities=list(manifest.capabilities),
            task_topic=self.topic,
            registered_at=_now_ms(),
            active=active,
        )
        with self._produce_lock:
            producer.produce(REGISTRY_TOPIC, registration, key=self.replica_id)

    def _heartbeat(
        self,
        producer: TypedProducer,
        state: ReplicaState | None = None,
        *,
        announce: bool = False,
    ) -> None:
        """Send a heartbeat; ``announce`` marks the one sent as a task starts (it reports
        the CPU of the last periodic heartbeat rather than restarting its measurement)."""
        busy = self._busy
        if state is None:
            state = ReplicaState.RUNNING if busy else ReplicaState.IDLE
        partitions: list[int] = []
        backlog = 0
        consumer = self._consumer
        if consumer is not None:
            waiting = consumer.backlog()
            partitions = sorted(p for t, p in waiting if t == self.topic)
            backlog = sum(n for (t, _p), n in waiting.items() if t == self.topic)
        heartbeat = AgentHeartbeat(
            agent=self.agent.manifest.name,
            replica_id=self.replica_id,
            state=state,
            in_flight=1 if busy else 0,
            cpu_percent=self._last_cpu if announce else self._cpu_percent(),
            memory_bytes=_rss_bytes(),
            sent_at=_now_ms(),
            partitions=partitions,
            backlog=backlog,
            task_id=self._current_task if busy else None,
        )
        with self._produce_lock:
            producer.produce(HEARTBEATS_TOPIC, heartbeat, key=self.replica_id)

    def _cpu_percent(self) -> float:
        """CPU used by this process since the previous call, in percent of one core."""
        cpu, wall = _cpu_seconds(), time.monotonic()
        last_cpu, last_wall = self._cpu_mark
        self._cpu_mark = cpu, wall
        percent = 100.0 * (cpu - last_cpu) / (wall - last_wall) if wall > last_wall else 0.0
        self._last_cpu = percent
        return percent

    def _beat(self, producer: TypedProducer, stop: threading.Event) -> None:
        """Send a heartbeat every ``heartbeat_interval_s`` until ``stop`` is set."""
        while not stop.wait(self.heartbeat_interval_s):
            try:
                self._heartbeat(producer)
            except Exception:  # a missed heartbeat must not stop the runner
                log.exception("%s: heartbeat failed", self.group_id)

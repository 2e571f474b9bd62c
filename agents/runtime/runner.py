"""Runs an :class:`~agents.runtime.agent.Agent` on Kafka.

Consumes ``bar.tasks.<name>`` in group ``bar-agent-<name>``, runs each task
through :func:`~agents.runtime.agent.execute` and produces the result to
``bar.tasks.results`` (keyed by task id). The result is flushed before the
record counts as handled, so the consumer commits only what was answered:
at-least-once. A redelivered task whose result this process already emitted is
not run again.

On start the runner registers the replica on ``bar.agents.registry`` (``agent_id`` is
the replica id, ``active`` true) and, while running, a background thread sends an
``AgentHeartbeat`` to ``bar.agents.heartbeats`` every ``heartbeat_interval_s``: RUNNING
while a task executes, IDLE otherwise, with this process's CPU and resident memory. On
stop it sends a DRAINING heartbeat and a registration with ``active`` false.

Limits: de-duplication is per process (the last ``dedup_capacity`` task ids it
answered); a task redelivered to another replica after a crash runs again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from agents.runtime.agent import DEFAULT_TIMEOUT_S, Agent, _now_ms, execute
from buildkit.catalog import Catalog, TopicSpec, default_catalog
from buildkit.consumer import ConsumedRecord, TypedConsumer
from buildkit.contracts.events import (
    AgentHeartbeat,
    AgentKind,
    AgentRegistration,
    AgentTask,
    ReplicaState,
)
from buildkit.producer import TypedProducer
from buildkit.settings import Settings

__all__ = ["HEARTBEATS_TOPIC", "REGISTRY_TOPIC", "RESULTS_TOPIC", "AgentRunner", "RunnerStats"]

log = logging.getLogger(__name__)

RESULTS_TOPIC = "bar.tasks.results"
HEARTBEATS_TOPIC = "bar.agents.heartbeats"
REGISTRY_TOPIC = "bar.agents.registry"


@dataclass
class RunnerStats:
    """What a runner did: tasks executed, redelivered tasks skipped, non-task records ignored."""

    executed: int = 0
    duplicates: int = 0
    ignored: int = 0


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


class _RecentIds:
    """A bounded set of task ids, forgetting the oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, task_id: str) -> None:
        self._ids[task_id] = None
        self._ids.move_to_end(task_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


class AgentRunner:
    """Serves ``agent``'s tasks from Kafka until stopped.

    ``group_id`` defaults to the manifest's ``bar-agent-<name>``. Every task runs
    on one event loop kept for the runner's lifetime, so an agent may hold async
    clients across tasks. ``replica_id`` (default ``<hostname>-<pid>``) keys the
    replica's heartbeats and is its ``agent_id`` in the registry.
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
        self.stats = RunnerStats()
        self._answered = _RecentIds(dedup_capacity)
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.version = version
        self.heartbeat_interval_s = heartbeat_interval_s
        self._busy = False
        self._produce_lock = threading.Lock()
        self._cpu_mark = _cpu_seconds(), time.monotonic()

    def run(
        self,
        stop: threading.Event | None = None,
        max_tasks: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> RunnerStats:
        """Serve tasks until ``stop`` is set, ``max_tasks`` records were handled
        (duplicates included) or nothing arrived for ``idle_timeout_s``."""
        producer = TypedProducer(self.settings, catalog=self.catalog, source=self.group_id)
        producer.check_topics([RESULTS_TOPIC, HEARTBEATS_TOPIC, REGISTRY_TOPIC])
        consumer = TypedConsumer(self.settings, self.group_id, [self.topic], catalog=self.catalog)
        self._cpu_mark = _cpu_seconds(), time.monotonic()
        self._register(producer, active=True)
        beating = threading.Event()
        beater = threading.Thread(
            target=self._beat, args=(producer, beating), name="bar-agent-heartbeat", daemon=True
        )
        beater.start()
        with asyncio.Runner() as loop:

            def handle(record: ConsumedRecord) -> None:
                self._handle(record, loop, producer)

            try:
                consumer.run(
                    handle, max_records=max_tasks, idle_timeout_s=idle_timeout_s, stop=stop
                )
                clean = True
            except BaseException:
                clean = False
                raise
            finally:
                beating.set()
                beater.join()
                try:
                    if clean:
                        self._heartbeat(producer, ReplicaState.DRAINING)
                        self._register(producer, active=False)
                        producer.flush()
                finally:
                    consumer.close()
                    producer.close()
        return self.stats

    def _handle(
        self, record: ConsumedRecord, loop: asyncio.Runner, producer: TypedProducer
    ) -> None:
        task = record.value
        if not isinstance(task, AgentTask):
            self.stats.ignored += 1
            log.warning("%s: ignoring %s on %s", self.group_id, type(task).__name__, record.topic)
            return
        if task.task_id in self._answered:
            self.stats.duplicates += 1
            log.info("%s: task %s already answered, not run again", self.group_id, task.task_id)
            return
        self._busy = True
        try:
            result = loop.run(execute(self.agent, task, default_timeout_s=self.default_timeout_s))
        finally:
            self._busy = False
        envelope = record.envelope
        with self._produce_lock:
            producer.produce(
                RESULTS_TOPIC,
                result,
                key=task.task_id,
                correlation_id=envelope.correlation_id,
                traceparent=envelope.traceparent,
            )
        # Acknowledged before the offset can be committed: a crash re-runs, never loses.
        producer.flush()
        self._answered.add(task.task_id)
        self.stats.executed += 1

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

    def _heartbeat(self, producer: TypedProducer, state: ReplicaState | None = None) -> None:
        busy = self._busy
        if state is None:
            state = ReplicaState.RUNNING if busy else ReplicaState.IDLE
        heartbeat = AgentHeartbeat(
            agent=self.agent.manifest.name,
            replica_id=self.replica_id,
            state=state,
            in_flight=1 if busy else 0,
            cpu_percent=self._cpu_percent(),
            memory_bytes=_rss_bytes(),
            sent_at=_now_ms(),
        )
        with self._produce_lock:
            producer.produce(HEARTBEATS_TOPIC, heartbeat, key=self.replica_id)

    def _cpu_percent(self) -> float:
        """CPU used by this process since the previous call, in percent of one core."""
        cpu, wall = _cpu_seconds(), time.monotonic()
        last_cpu, last_wall = self._cpu_mark
        self._cpu_mark = cpu, wall
        return 100.0 * (cpu - last_cpu) / (wall - last_wall) if wall > last_wall else 0.0

    def _beat(self, producer: TypedProducer, stop: threading.Event) -> None:
        """Send a heartbeat every ``heartbeat_interval_s`` until ``stop`` is set."""
        while not stop.wait(self.heartbeat_interval_s):
            try:
                self._heartbeat(producer)
            except Exception:  # a missed heartbeat must not stop the runner
                log.exception("%s: heartbeat failed", self.group_id)

"""``swarm.setLoadBalancing``: which replica of an agent type gets the next task.

:class:`LoadBalancing` is the setting (the architecture document's
``{strategy, healthCheckInterval, failureThreshold}``); :class:`TaskDispatcher`
sends :class:`~buildkit.contracts.events.AgentTask` records to
``bar.tasks.<agent_type>`` the way it says.

Strategies
----------
``partition`` (the default)
    The record is keyed (the task id, or a key the caller gives, such as a file
    path) and Kafka's default partitioner picks the partition; the consumer group's
    cooperative-sticky assignor spreads partitions over replicas. Tasks with one key
    stay in order on one replica, and a skewed key set loads one replica only.

``least-loaded``
    The dispatcher keeps a view of the agent type's replicas from
    ``bar.agents.heartbeats`` (read by assignment, no consumer group, refreshed on
    every dispatch): the latest heartbeat per replica. A replica is *live* when that
    heartbeat is for this agent type, not ``DRAINING``, lists at least one task-topic
    partition, and is at most ``healthCheckInterval * failureThreshold`` old. For each
    live replica::

        load = in_flight + backlog + sent_since

    ``in_flight`` and ``backlog`` (tasks waiting in the replica's partitions) come
    from its latest heartbeat; ``sent_since`` is the number of tasks this dispatcher
    produced to that replica's partitions after the heartbeat's ``sent_at``, so a
    burst between two heartbeats spreads too instead of piling onto the replica that
    looked idle. The replica with the lowest load wins; ties go to the replica this
    dispatcher has sent the fewest tasks in total, then to the lowest replica id. The
    task goes to one of the winner's partitions (round-robin among them) with an
    explicit partition; its key is kept on the record. With no live replica the
    dispatcher falls back to ``partition``.

Limits of ``least-loaded``
--------------------------
* Heartbeats are samples: ``in_flight`` and ``backlog`` are as old as the heartbeat.
  ``sent_since`` corrects for this dispatcher's own tasks only; tasks other
  dispatchers sent since then are invisible until the next heartbeat.
* ``sent_since`` compares this machine's clock with the replica's ``sent_at``: clock
  skew between them moves tasks in or out of the count. Staleness is judged the same
  way.
* ``backlog`` is what the replica measured, a lower bound on the embedded broker
  (its high watermark trails the last record by up to one batch, DESIGN.md).
* Partitions move: a rebalance between the heartbeat and the dispatch sends the task
  to the partition's new owner, which is correct (the group still consumes it) but
  not the replica the formula chose. While heartbeats disagree about an owner, a
  partition may count toward two replicas.
* Per-key order and affinity are given up: tasks with one key may run on several
  replicas at once.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from buildkit.catalog import (
    AGENT_TASK_PARTITIONS,
    Catalog,
    TopicSpec,
    default_catalog,
    task_topic_name,
)
from buildkit.contracts.events import AgentHeartbeat, AgentTask, ReplicaState
from buildkit.settings import Settings

__all__ = [
    "HEARTBEATS_TOPIC",
    "Dispatch",
    "LoadBalancing",
    "LoadView",
    "ReplicaLoad",
    "Strategy",
    "TaskDispatcher",
]

log = logging.getLogger(__name__)

#: Where replicas report liveness and load (declared in the default catalog).
HEARTBEATS_TOPIC = "bar.agents.heartbeats"

Strategy = Literal["partition", "least-loaded"]


class LoadBalancing(BaseModel):
    """``swarm.setLoadBalancing``: how tasks are spread over an agent type's replicas.

    Accepts the architecture document's camelCase keys (``strategy``,
    ``healthCheckInterval`` in milliseconds, ``failureThreshold``) and the field
    names. A replica whose latest heartbeat is older than
    ``healthCheckInterval * failureThreshold`` (:attr:`stale_after`) gets no task.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    strategy: Strategy = "partition"
    health_check_interval_ms: int = Field(
        default=10_000,
        gt=0,
        validation_alias=AliasChoices(
            "healthCheckInterval", "health_check_interval_ms", "health_check_interval"
        ),
    )
    failure_threshold: int = Field(
        default=3, ge=1, validation_alias=AliasChoices("failureThreshold", "failure_threshold")
    )

    @property
    def stale_after(self) -> timedelta:
        """How old a replica's latest heartbeat may be before the replica is ignored."""
        return timedelta(milliseconds=self.health_check_interval_ms * self.failure_threshold)


@dataclass(frozen=True)
class ReplicaLoad:
    """One live replica as the least-loaded strategy sees it."""

    replica_id: str
    partitions: tuple[int, ...]
    state: ReplicaState
    heartbeat_at: datetime
    in_flight: int
    backlog: int
    #: Tasks this dispatcher sent to the replica's partitions after ``heartbeat_at``.
    sent_since: int
    #: Tasks this dispatcher sent to the replica in total (the first tie-break).
    sent_total: int

    @property
    def load(self) -> int:
        """``in_flight + backlog + sent_since``."""
        return self.in_flight + self.backlog + self.sent_since


class LoadView:
    """The latest heartbeat of each replica of ``agent_type``, and what was sent since.

    Pure bookkeeping, no Kafka: feed it heartbeats with :meth:`observe`, ask
    :meth:`choose` for a partition (it records the dispatch), or record a dispatch
    made elsewhere with :meth:`record`. ``partition_count`` (the task topic's
    partitions), when known, drops partitions a heartbeat lists beyond it.
    Not thread-safe; :class:`TaskDispatcher` serializes calls.
    """

    def __init__(
        self, agent_type: str, balancing: LoadBalancing, *, partition_count: int | None = None
    ) -> None:
        self.agent_type = agent_type
        self.balancing = balancing
        self.partition_count = partition_count
        self._latest: dict[str, AgentHeartbeat] = {}
        # When each task was sent, per partition, sorted: "sent since" is one bisect.
        self._sent: dict[int, list[datetime]] = {}
        self._sent_total: Counter[str] = Counter()
        self._cursor: Counter[str] = Counter()

    def observe(self, heartbeat: AgentHeartbeat) -> bool:
        """Keep ``heartbeat`` if it is this agent type's and the replica's newest; say so."""
        if heartbeat.agent != self.agent_type:
            return False
        known = self._latest.get(heartbeat.replica_id)
        if known is not None and known.sent_at > heartbeat.sent_at:
            return False
        self._latest[heartbeat.replica_id] = heartbeat
        return True

    def record(self, partition: int, at: datetime, replica_id: str | None = None) -> None:
        """Note a task sent to ``partition`` at ``at`` (this machine's clock, UTC)."""
        times = self._sent.setdefault(partition, [])
        if times and times[-1] > at:  # a delivery report for an earlier send
            bisect.insort(times, at)
        else:
            times.append(at)
        if replica_id is not None:
            self._sent_total[replica_id] += 1

    def loads(self, now: datetime) -> list[ReplicaLoad]:
        """Every live replica with its load, lowest load (then tie-breaks) first."""
        horizon = now - self.balancing.stale_after
        self._forget_before(horizon)
        found = []
        for replica_id, beat in list(self._latest.items()):
            if beat.sent_at < horizon:
                del self._latest[replica_id]  # gone quiet: forget it (replicas come and go)
                continue
            if beat.state is ReplicaState.DRAINING:
                continue
            partitions = tuple(
                sorted(
                    {
                        p
                        for p in beat.partitions
                        if p >= 0 and (self.partition_count is None or p < self.partition_count)
                    }
                )
            )
            if not partitions:
                continue
            sent_since = sum(
                len(times) - bisect.bisect_right(times, beat.sent_at)
                for times in (self._sent.get(p, ()) for p in partitions)
            )
            found.append(
                ReplicaLoad(
                    replica_id=replica_id,
                    partitions=partitions,
                    state=beat.state,
                    heartbeat_at=beat.sent_at,
                    in_flight=beat.in_flight,
                    backlog=beat.backlog,
                    sent_since=sent_since,
                    sent_total=self._sent_total[replica_id],
                )
            )
        found.sort(key=lambda r: (r.load, r.sent_total, r.replica_id))
        return found

    def pick(self, now: datetime) -> ReplicaLoad | None:
        """The least-loaded live replica, or None when no replica is live."""
        loads = self.loads(now)
        return loads[0] if loads else None

    def choose(self, now: datetime) -> tuple[ReplicaLoad, int] | None:
        """Pick a replica and the next of its partitions (round-robin); record the
        dispatch. None when no replica is live (the caller falls back to keying)."""
        chosen = self.pick(now)
        if chosen is None:
            return None
        turn = self._cursor[chosen.replica_id]
        self._cursor[chosen.replica_id] = turn + 1
        partition = chosen.partitions[turn % len(chosen.partitions)]
        self.record(partition, now, chosen.replica_id)
        return chosen, partition

    def _forget_before(self, horizon: datetime) -> None:
        # Dispatches older than the oldest heartbeat that still counts can never be
        # "since" a live heartbeat again.
        for times in self._sent.values():
            if times and times[0] < horizon:
                del times[: bisect.bisect_left(times, horizon)]


@dataclass(frozen=True)
class Dispatch:
    """Where one task went.

    ``strategy`` is what was applied: ``least-loaded`` names the chosen replica and
    partition; ``partition`` (asked for, or the fallback with no live replica) leaves
    the partition to the producer's partitioner, so ``partition`` is None.
    """

    task_id: str
    key: str
    event_id: str
    strategy: Strategy
    partition: int | None = None
    replica_id: str | None = None
    load: int | None = None


class _HeartbeatFeed:
    """Reads ``bar.agents.heartbeats`` by assignment (no group) into a :class:`LoadView`.

    Starts at offsets-for-times of ``now - stale_after``, used as a lower bound: the
    embedded broker answers 0 for every timestamp (DESIGN.md), so records are also
    filtered on their timestamp before decoding.
    """

    def __init__(self, settings: Settings, view: LoadView, task_topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from buildkit.kafka import require_topics
        from buildkit.serde import SerdeRegistry

        self.settings = settings
        self.view = view
        self._consumer = Consumer(
            settings.kafka_config(
                **{
                    # Never subscribes or commits: the id only satisfies the client.
                    "group.id": f"bar-dispatcher-{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 100,
                    "log_level": 0,
                }
            )
        )
        try:
            self._serde = SerdeRegistry(settings, default_catalog()).for_topic(HEARTBEATS_TOPIC)
            md = require_topics(self._consumer, settings, [HEARTBEATS_TOPIC, task_topic])
        except BaseException:
            self._consumer.close()
            raise
        view.partition_count = len(md.topics[task_topic].partitions)
        start_ms = int(time.time() * 1000) - int(view.balancing.stale_after.total_seconds() * 1000)
        self._horizon_ms = start_ms
        wanted = [
            TopicPartition(HEARTBEATS_TOPIC, p, start_ms)
            for p in sorted(md.topics[HEARTBEATS_TOPIC].partitions)
        ]
        try:
            starts = self._consumer.offsets_for_times(wanted, timeout=settings.client_timeout_s)
        except Exception:  # a broker without ListOffsets by time: read from the start
            log.warning("offsets-for-times failed on %s; reading from the start", HEARTBEATS_TOPIC)
            starts = [TopicPartition(HEARTBEATS_TOPIC, tp.partition, -2) for tp in wanted]
        # -1 (OFFSET_END) means no record that recent: start at the end.
        self._consumer.assign(starts)
        # What catch_up must read: partitions whose start is below the high watermark.
        self._pending: dict[int, int] = {}
        for tp in starts:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(HEARTBEATS_TOPIC, tp.partition), timeout=settings.client_timeout_s
            )
            start = low if tp.offset == -2 else tp.offset  # -2: OFFSET_BEGINNING
            if 0 <= start < high:
                self._pending[tp.partition] = high

    def catch_up(self, timeout_s: float) -> int:
        """Read until every partition reached the high watermark seen at start (a lower
        bound of its end) or ``timeout_s`` passed; return the heartbeats kept."""
        kept = 0
        deadline = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < deadline:
            for msg in self._consumer.consume(num_messages=500, timeout=0.1):
                if msg.error() is None:
                    partition = msg.partition() or 0
                    if (msg.offset() or 0) + 1 >= self._pending.get(partition, 0):
                        self._pending.pop(partition, None)
                    kept += self._take(msg)
        if self._pending:
            log.warning(
                "heartbeats not caught up within %gs on partitions %s; reading on",
                timeout_s,
                sorted(self._pending),
            )
            self._pending.clear()
        return kept

    def refresh(self, wait_s: float = 0.0) -> int:
        """Apply what has arrived (waiting up to ``wait_s`` for the first record);
        return the heartbeats kept."""
        kept = 0
        batch = self._consumer.consume(num_messages=500, timeout=wait_s)
        while batch:
            for msg in batch:
                if msg.error() is None:
                    kept += self._take(msg)
            batch = self._consumer.consume(num_messages=500, timeout=0)
        return kept

    def _take(self, msg: Any) -> int:
        horizon_ms = int(time.time() * 1000) - int(
            self.view.balancing.stale_after.total_seconds() * 1000
        )
        if msg.timestamp()[1] < horizon_ms:
            return 0  # too old to count: skip the decode
        try:
            beat = self._serde.decode(msg.value())
        except Exception as exc:
            log.warning("undecodable record on %s@%s: %s", HEARTBEATS_TOPIC, msg.offset(), exc)
            return 0
        return int(isinstance(beat, AgentHeartbeat) and self.view.observe(beat))

    def close(self) -> None:
        self._consumer.close()


class TaskDispatcher:
    """Sends :class:`AgentTask` records to ``bar.tasks.<agent_type>`` as ``balancing`` says.

    ``dispatch(task, key=...)`` keys the record by ``key`` (default: the task id). With
    ``least-loaded`` the heartbeat view is read on the first dispatch (or
    :meth:`refresh`) and brought up to date before every dispatch. Thread-safe;
    ``close`` (or leaving the ``with`` block) flushes.
    """

    def __init__(
        self,
        settings: Settings,
        agent_type: str,
        balancing: LoadBalancing | None = None,
        *,
        catalog: Catalog | None = None,
        source: str | None = None,
    ) -> None:
        from buildkit.producer import TypedProducer

        self.settings = settings
        self.agent_type = agent_type
        self.balancing = balancing or LoadBalancing()
        self.topic = task_topic_name(agent_type)
        catalog = catalog or default_catalog()
        if self.topic not in catalog:
            catalog = Catalog(
                [
                    *catalog,
                    TopicSpec(
                        self.topic, AgentTask, partitions=AGENT_TASK_PARTITIONS, key_field="task_id"
                    ),
                ]
            )
        self.catalog = catalog
        self.view = LoadView(agent_type, self.balancing)
        self._producer = TypedProducer(
            settings, catalog=catalog, source=source or f"bar-dispatcher-{agent_type}"
        )
        self._producer.check_topics([self.topic])
        self._feed: _HeartbeatFeed | None = None
        self._lock = threading.Lock()

    # -- the view ----------------------------------------------------------------
    def refresh(self, wait_s: float = 0.0) -> list[ReplicaLoad]:
        """Read new heartbeats (waiting up to ``wait_s`` for one) and return the live
        replicas, least loaded first. Empty with the ``partition`` strategy."""
        with self._lock:
            if self.balancing.strategy != "least-loaded":
                return []
            self._refresh(wait_s)
            return self.view.loads(datetime.now(UTC))

    def _refresh(self, wait_s: float) -> None:
        if self._feed is None:
            self._feed = _HeartbeatFeed(self.settings, self.view, self.topic)
            self._feed.catch_up(self.settings.client_timeout_s)
        self._feed.refresh(wait_s)

    # -- sending -----------------------------------------------------------------
    def dispatch(
        self,
        task: AgentTask,
        key: str | None = None,
        *,
        correlation_id: str | None = None,
        traceparent: str | None = None,
    ) -> Dispatch:
        """Queue ``task``; return where it goes. Call :meth:`flush` to wait for the broker."""
        key = task.task_id if key is None else key
        with self._lock:
            choice = None
            if self.balancing.strategy == "least-loaded":
                self._refresh(0.0)
                choice = self.view.choose(datetime.now(UTC))
            replica, partition = choice if choice is not None else (None, None)
            event_id = self._producer.produce(
                self.topic,
                task,
                key,
                correlation_id=correlation_id,
                traceparent=traceparent,
                partition=partition,
                # Keyed by the partitioner: count it toward the owner once it is known.
                on_delivery=(
                    self._note_partition(datetime.now(UTC))
                    if replica is None and self._feed
                    else None
                ),
            )
            if replica is None:
                return Dispatch(task.task_id, key, event_id, "partition")
            return Dispatch(
                task.task_id,
                key,
                event_id,
                "least-loaded",
                partition=partition,
                replica_id=replica.replica_id,
                load=replica.load,
            )

    def _note_partition(self, at: datetime) -> Any:
        """A delivery callback counting a keyed task toward its partition's owner."""

        def delivered(err: Any, msg: Any) -> None:
            # Runs inside the producer's poll, i.e. under self._lock in dispatch/flush.
            if err is None:
                self.view.record(msg.partition(), at)

        return delivered

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every dispatched task is acknowledged; raise if any failed."""
        with self._lock:
            self._producer.flush(timeout)

    def close(self) -> None:
        """Flush and stop reading heartbeats."""
        try:
            self.flush()
        finally:
            if self._feed is not None:
                self._feed.close()
                self._feed = None

    def __enter__(self) -> TaskDispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The ROE worker: a confluent-kafka transactional consume-transform-produce loop.

Each batch of inputs — commands (``bar.roe.commands``), agent results
(``bar.tasks.results``), GitLab events (``bar.gitlab.events``, for triggers) and
remote-agent heartbeats (``bar.agents.heartbeats``) — is decided by the pure
decider; its events (``bar.roe.events``), the task dispatches they stand for
(``bar.tasks.<agent>``) and the consumed offsets commit in one transaction.

State is the fold of ``bar.roe.events``, rebuilt at start. Everything the engine
writes is deterministic — event ids ``<run>:<seq>``, task ids
``<run>.<stage>.<attempt>`` — and the fold skips an event it already has. That
matters beyond crashes: the embedded Tansu broker leaves the records of an aborted
transaction visible to ``read_committed`` readers once they reached it (a fact this
module's tests pin), so a killed engine can leave half a batch behind. Restarting
folds whatever is visible, and because every command is decided against that state
(each one also dispatches whatever is ready), the run converges to the same outcome:
nothing lost, no stage attempt sent under two task ids.

Inputs are assigned, not subscribed: one engine owns every partition (a standby is
fenced by the transactional id), and a restart after SIGKILL does not wait for a
consumer group to expire the dead member.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from buildkit.catalog import (
    Catalog,
    TopicSpec,
    default_catalog,
    dlq_spec,
    dlq_topic_name,
    remote_task_topic_name,
    task_topic_name,
)
from buildkit.contracts.base import Event
from buildkit.contracts.events import AgentHeartbeat, AgentResult, AgentTask, GitLabEvent
from buildkit.contracts.roe import WorkflowCommand, WorkflowEvent, WorkflowEventKind
from buildkit.envelope import HeaderFactory
from buildkit.errors import BuildKitError
from buildkit.kafka import next_batch, require_topics
from buildkit.serde import SerdeRegistry, TopicSerde
from buildkit.settings import Settings
from streams.roe.decider import (
    Command,
    InvalidCommand,
    RecordResult,
    Remotes,
    RunState,
    StartRun,
    Tick,
    command_from_record,
    decide,
    evolve,
    next_wakeup,
    task_for,
)
from streams.roe.model import REMOTE_PREFIX, WorkflowSpec
from streams.roe.triggers import due_cron_fires, match_event

log = logging.getLogger(__name__)

COMMANDS = "bar.roe.commands"
EVENTS = "bar.roe.events"
RESULTS = "bar.tasks.results"
GITLAB = "bar.gitlab.events"
HEARTBEATS = "bar.agents.heartbeats"
GROUP = "bar-roe"
TRANSACTIONAL_ID = "bar-roe-engine"
CRON_LOOKBACK = timedelta(hours=1)


@dataclass
class EngineStats:
    """What an engine run did."""

    inputs: int = 0
    events: int = 0
    tasks: int = 0
    transactions: int = 0
    runs_rebuilt: int = 0
    dead_letters: int = 0
    finished_runs: set[str] = field(default_factory=set)


class RoeEngine:
    """Runs workflows: decides every input and commits its effects atomically."""

    def __init__(
        self,
        settings: Settings,
        *,
        workflows: Sequence[WorkflowSpec] = (),
        catalog: Catalog | None = None,
        transactional_id: str = TRANSACTIONAL_ID,
        group_id: str = GROUP,
        remote_silence_ms: int = 30_000,
        cron_lookback: timedelta = CRON_LOOKBACK,
    ) -> None:
        self.settings = settings
        self.workflows = list(workflows)
        self.catalog = (catalog or default_catalog()).with_dlq(group_id)
        self.group_id = group_id
        self.serdes = SerdeRegistry(settings, self.catalog)
        self.headers = HeaderFactory("buildkit-roe")
        self.runs: dict[str, RunState] = {}
        self.remote_seen: dict[str, int] = {}
        self.remote_silence_ms = remote_silence_ms
        self.stats = EngineStats()
        self.inputs = [COMMANDS, RESULTS, GITLAB, HEARTBEATS]
        self._producer = Producer(
            settings.kafka_config(
                **{
                    "transactional.id": transactional_id,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    "allow.auto.create.topics": False,
                    "log_level": 0,
                }
            )
        )
        self._consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": group_id,
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    # Some brokers (the embedded Tansu) hold every fetch this long even
                    # with data waiting: it bounds each hop's latency.
                    "fetch.wait.max.ms": 5,
                    "log_level": 0,
                }
            )
        )
        self._known_topics: set[str] = set()
        # Cron fires are derived from the clock; a restart looks back this far, and the
        # run ids (derived from the fire time) make a fire that already ran a no-op.
        self._cron_checked = datetime.now(UTC) - cron_lookback

    # -- start -------------------------------------------------------------------------
    def start(self) -> None:
        """Fence older engines, rebuild state from ``bar.roe.events``, assign the inputs."""
        from buildkit.topics import apply_topics

        md = require_topics(self._consumer, self.settings, [*self.inputs, EVENTS])
        apply_topics(self.settings, Catalog([dlq_spec(self.group_id)]))
        # Aborts what a killed predecessor left open and fences it for good.
        self._known_topics = set(md.topics)
        for spec in self.workflows:  # their triggers start runs: refuse to start blind
            self._require_task_topics(spec)
        self._producer.init_transactions(self.settings.client_timeout_s * 2)
        self.rebuild()
        partitions = [
            TopicPartition(topic, p)
            for topic in self.inputs
            for p in sorted(md.topics[topic].partitions)
        ]
        committed = self._consumer.committed(partitions, timeout=self.settings.client_timeout_s)
        self._consumer.assign(
            [
                TopicPartition(
                    tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                )
                for tp in committed
            ]
        )

    def rebuild(self) -> None:
        """Fold every committed (and, on Tansu, every visible) event of ``bar.roe.events``."""
        reader = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": f"{self.group_id}-rebuild",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 20,
                    "log_level": 0,
                }
            )
        )
        serde = self.serdes.for_topic(EVENTS)
        try:
            md = require_topics(reader, self.settings, [EVENTS])
            partitions = sorted(md.topics[EVENTS].partitions)
            highs = {
                p: reader.get_watermark_offsets(
                    TopicPartition(EVENTS, p), timeout=self.settings.client_timeout_s
                )[1]
                for p in partitions
            }
            reader.assign([TopicPartition(EVENTS, p, OFFSET_BEGINNING) for p in partitions])
            done: set[int] = set()
            while len(done) < len(partitions):
                for msg in next_batch(reader, 1000, 1.0):
                    err = msg.error()
                    if err is not None:
                        if (
                            err.code() == KafkaError._PARTITION_EOF
                            and (msg.offset() or 0) >= highs[msg.partition() or 0]
                        ):
                            done.add(msg.partition() or 0)
                        continue
                    event = serde.decode(msg.value())
                    assert isinstance(event, WorkflowEvent)
                    self.runs[event.run_id] = evolve(self.runs.get(event.run_id), event)
        finally:
            reader.close()
        self.stats.runs_rebuilt = len(self.runs)
        log.info("rebuilt %d run(s) from %s", len(self.runs), EVENTS)

    # -- the loop ----------------------------------------------------------------------
    def run(
        self,
        stop: threading.Event | None = None,
        *,
        tick_interval_s: float = 0.2,
        until_idle_s: float | None = None,
    ) -> EngineStats:
        """Process inputs and ticks until ``stop`` is set (or nothing happened for
        ``until_idle_s`` seconds while no run is active)."""
        self.start()
        idle_since = time.monotonic()
        while stop is None or not stop.is_set():
            # Small batches: a result should not wait behind hundreds of other inputs.
            batch = next_batch(self._consumer, 100, tick_interval_s)
            now_ms = int(time.time() * 1000)
            self._transaction(batch, now_ms)
            if batch or self._active():
                idle_since = time.monotonic()
            elif until_idle_s is not None and time.monotonic() - idle_since > until_idle_s:
                break
        return self.stats

    def _active(self) -> bool:
        return any(not state.done for state in self.runs.values())

    def _transaction(self, batch: list[Message], now_ms: int) -> None:
        # A batch always commits its offsets, so it always has a transaction; a tick
        # alone only when it decided something.
        begun = bool(batch)
        if begun:
            self._producer.begin_transaction()
        try:
            commands = [c for msg in batch for c in self._commands(msg, now_ms)]
            commands.extend(self._cron_starts(now_ms))
            commands.append(Tick(now_ms))
            for command in commands:
                for state, events in self._decide(command):
                    if events and not begun:
                        self._producer.begin_transaction()
                        begun = True
                    self._emit(state, events)
            positions = self._positions(batch)
            if positions:
                self._producer.send_offsets_to_transaction(
                    positions,
                    self._consumer.consumer_group_metadata(),
                    self.settings.client_timeout_s,
                )
            if begun:
                self._producer.commit_transaction(self.settings.client_timeout_s * 2)
                self.stats.transactions += 1
        except Exception:
            if begun:
                self._abort()
            raise
        self.stats.inputs += len(batch)

    def _require_task_topics(self, spec: WorkflowSpec) -> None:
        """Refuse a run whose stages could be dispatched to a topic the broker lacks:
        producing to it would fail every transaction from then on."""
        missing = [t for t in self._task_topics(spec) if t not in self._known_topics]
        if missing:
            md = self._consumer.list_topics(timeout=self.settings.client_timeout_s)
            self._known_topics = set(md.topics)
            missing = [t for t in missing if t not in self._known_topics]
        if missing:
            raise InvalidCommand(
                f"workflow {spec.workflow_id} dispatches to topic(s) {', '.join(missing)}, "
                f"which do not exist on {self.settings.bootstrap_servers} — declare the agents' "
                "task topics and run: buildkit topics apply"
            )

    @staticmethod
    def _task_topics(spec: WorkflowSpec) -> list[str]:
        topics = []
        for stage in spec.stages:
            remote = stage.remote
            if remote is None:
                topics.append(task_topic_name(stage.agent))
                continue
            topics.append(remote_task_topic_name(*remote))
            if stage.fallback_local:
                topics.append(task_topic_name(remote[1]))
        return topics

    def _cron_starts(self, now_ms: int) -> list[Command]:
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        if now <= self._cron_checked:
            return []
        starts: list[Command] = []
        for spec in self.workflows:
            for match in due_cron_fires(spec, self._cron_checked, now):
                starts.append(StartRun(match.run_id, spec, now_ms, match.inputs, match.trigger_id))
        self._cron_checked = now
        return starts

    def _abort(self) -> None:
        # In-memory state already includes this batch's events: it is no longer the
        # fold of what is committed. Stop; a restart rebuilds it from the log.
        try:
            self._producer.abort_transaction(self.settings.client_timeout_s)
        except KafkaException:
            log.exception("abort failed")

    def _positions(self, batch: list[Message]) -> list[TopicPartition]:
        ends: dict[tuple[str, int], int] = {}
        for msg in batch:
            if msg.error() is None:
                ends[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        return [TopicPartition(t, p, o) for (t, p), o in ends.items()]

    def _decide(self, command: Command) -> Iterable[tuple[RunState, list[WorkflowEvent]]]:
        remotes = Remotes(self.remote_seen, self.remote_silence_ms)
        if isinstance(command, Tick):
            targets = [
                run_id
                for run_id, state in self.runs.items()
                if not state.done
                and (due := next_wakeup(state)) is not None
                and due <= command.at_ms
            ]
        elif isinstance(command, RecordResult):
            targets = [command.result.run_id] if command.result.run_id else []
        else:
            targets = [command.run_id]
        for run_id in targets:
            events = decide(self.runs.get(run_id), command, remotes=remotes)
            state = self.runs.get(run_id)
            for event in events:
                state = evolve(state, event)
            if state is not None:
                self.runs[run_id] = state
                if state.done:
                    self.stats.finished_runs.add(run_id)
                yield state, events

    def _emit(self, state: RunState, events: list[WorkflowEvent]) -> None:
        for event in events:
            self._send(EVENTS, event, event.run_id, event.event_id)
            self.stats.events += 1
            if event.kind is WorkflowEventKind.STAGE_DISPATCHED:
                topic, task = task_for(event)
                self._send(topic, task, task.task_id, task.task_id)
                self.stats.tasks += 1

    def _serde(self, topic: str) -> TopicSerde:
        if topic not in self.serdes.catalog and topic.startswith(("bar.tasks.", "bar.ossa.")):
            # A task topic of an agent the catalog does not list (a remote network's,
            # or an agent added later): it carries AgentTask like every task topic.
            self.serdes.catalog = Catalog([*self.serdes.catalog, TopicSpec(topic, AgentTask)])
        return self.serdes.for_topic(topic)

    def _send(self, topic: str, value: Event, key: str, event_id: str) -> None:
        serde = self._serde(topic)
        headers = self.headers.build(serde.model.avro_name(), event_id=event_id)
        while True:
            try:
                self._producer.produce(topic, serde.encode(value), key.encode(), headers=headers)  # type: ignore[arg-type]
                break
            except BufferError:
                self._producer.poll(0.05)

    # -- inputs ------------------------------------------------------------------------
    def _commands(self, msg: Message, now_ms: int) -> list[Command]:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("input error on %s: %s", msg.topic(), err.str())
            return []
        topic = msg.topic() or ""
        try:
            value = self.serdes.for_topic(topic).decode(msg.value())
            return self._translate(topic, value, now_ms)
        except (BuildKitError, InvalidCommand) as exc:
            self._dead_letter(msg, exc)
            return []

    def _translate(self, topic: str, value: Event, now_ms: int) -> list[Command]:
        if isinstance(value, WorkflowCommand):
            command = command_from_record(value, now_ms)
            if isinstance(command, StartRun) and command.run_id not in self.runs:
                self._require_task_topics(command.spec)  # else: dead-lettered, not started
            return [command]
        if isinstance(value, AgentResult):
            return [RecordResult(value, now_ms)] if value.run_id else []
        if isinstance(value, GitLabEvent):
            by_id = {spec.workflow_id: spec for spec in self.workflows}
            return [
                StartRun(m.run_id, by_id[m.workflow_id], now_ms, m.inputs, m.trigger_id)
                for m in match_event(self.workflows, value)
            ]
        if isinstance(value, AgentHeartbeat):
            if value.agent.startswith(REMOTE_PREFIX):
                sent = int(value.sent_at.timestamp() * 1000)
                self.remote_seen[value.agent] = max(sent, self.remote_seen.get(value.agent, 0))
            return []
        return []

    def _dead_letter(self, msg: Message, exc: Exception) -> None:
        """Send an input that cannot be decided to ``bar.dlq.<group>``, in the batch's
        transaction, with the error and its source in headers; the engine moves on."""
        self.stats.dead_letters += 1
        log.error("dead-lettering %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), exc)
        headers: list[tuple[str, bytes | str | None]] = [
            *(msg.headers() or []),
            ("dlq_error", str(exc)[:4000].encode()),
            ("dlq_error_type", type(exc).__name__.encode()),
            ("dlq_source_topic", (msg.topic() or "").encode()),
            ("dlq_source_partition", str(msg.partition()).encode()),
            ("dlq_source_offset", str(msg.offset()).encode()),
            ("dlq_group", self.group_id.encode()),
        ]
        self._producer.produce(
            dlq_topic_name(self.group_id), msg.value(), msg.key(), headers=headers
        )

    def close(self) -> None:
        """Release the clients."""
        self._consumer.close()
        self._producer.flush(self.settings.client_timeout_s)

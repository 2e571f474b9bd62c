"""(f) SWARM: tasks/s with 1, 2 and 4 replicas of an agent that answers at once, and the
time from a burst of tasks to the first new replica taking work.

Throughput
----------
Each replica is a real OS process, ``python -m agents.runtime.serve --entrypoint
agents.samples:EchoAgent --name <fresh name>`` (the command SWARM's local backend runs),
consuming ``bar.tasks.<name>`` (24 partitions) in group ``bar-agent-<name>``. For N = 1,
2 and 4, under a fresh agent name each: start N replicas, wait until their heartbeats on
``bar.agents.heartbeats`` split the 24 partitions between them (held for a second),
answer a warm-up batch (every replica has then caught up with ``bar.tasks.results`` for
de-duplication and fetched its schemas), then send ``tasks`` tasks at once. A run's time
is from the first send to the CreateTime of the last of their results on
``bar.tasks.results`` (read by assignment, no group, filtered by task id; the result's
CreateTime is stamped by the replica's producer, on this machine's clock).

What a replica pays per task is the cost measured: the runner runs each task on its
event loop and produces the result (with its CloudEvents headers) as the task ends, and
it commits per batch — a batch ends once its tasks took 0.2 s, at most 200 — after
**flushing** the batch's results (acks=all): a result is on the broker before its task
counts as done, so a crash re-runs at most one batch, and a replica that takes the
partition over skips what was answered when it catches up with ``bar.tasks.results``
(cross-replica de-duplication, ``agents/runtime/answered.py``). Before each task it also
announces it in a heartbeat (crash-loop detection, ``agents/runtime/attempts.py``).

Baselines, in the same run on the same broker: one process each, a plain confluent-kafka
consume → produce loop (``python -m bench.bench_swarm``), on a task topic of its own with
24 partitions, in a consumer group with the runner's settings (cooperative-sticky,
fetch.wait.max.ms 100, the session timeout), writing the same Avro bytes to
``bar.tasks.results`` through the project's serde (the same contract, the same encoder;
no CloudEvents headers, no heartbeats, no de-duplication, no event loop):

* ``plain_per_task`` flushes the result and commits synchronously after every task, as
  the runner does: ``replicas_1 / plain_per_task`` is the runtime's own overhead.
* ``plain_batched`` takes up to 500 tasks per poll, flushes once and commits once per
  batch (at-least-once too, but a crash re-runs the whole batch): ``plain_per_task /
  plain_batched`` is what per-task durability costs.

The machine has 2 cores, shared by the broker, the replicas and this process (sending
tasks and reading results): 4 replicas cannot do 4x the work of one. The efficiency
``tps(N) / (N x tps(1))`` is reported as measured, next to the CPU time per task of the
replicas, the broker and this process and how busy the machine's cores were.

Between the replica sets and the plain loops, ``catch_up`` times a fresh
:class:`~agents.runtime.answered.AnsweredTasks` reading the newest results (what a new
replica does between its assignment and its first task) on what the replicas wrote.

Scale-up reaction
-----------------
A :class:`~streams.swarm.api.Swarm` on the local backend (controller interval 0.5 s,
heartbeats every 0.25 s) runs ``agents.samples:SleepyAgent`` (``sleep_s`` 0.2 per task)
with ``minReplicas 1, maxReplicas 4, tasksPerAgent 5, scaleUpCooldown 0``, under a fresh
agent name per repeat. Once its one replica holds all 24 partitions and has answered one
task (its own catch-up done, as a long-running replica's is), a burst of ``burst`` tasks
goes out through ``swarm.create_tasks`` (lag 100 / 5 per agent → 20, clamped to 4). These
runs go before the throughput runs, while ``bar.tasks.results`` is short: a new replica's
catch-up reads up to 10,000 results per partition of it, one record batch per result on
this broker, so the same step on a long-lived results topic is slower (``catch_up``).
Measured from the moment of the burst (this process's clock; every other time is from an
event on the bus, stamped on the same machine):

* ``decision``: the first UP decision on ``bar.swarm.decisions`` (its ``at`` is when the
  controller measured the lag);
* ``first_new_task_started``: the earliest ``started_at`` among results produced by a
  replica that did not exist before the burst (results carry ``replica_id``);
* ``first_new_result``: the earliest CreateTime among those results, split for the replica
  that produced it into: burst → decision; decision → process started (its ReplicaEvent
  STARTED on ``bar.swarm.replicas``); started → first heartbeat (interpreter, imports,
  the runner's clients: the process is up); first heartbeat → partitions assigned
  (joining the group: a cooperative rebalance; the time is the replica's own log line
  "assigned …", its first heartbeat listing partitions if that line is missing);
  assigned → first task started (catch-up with ``bar.tasks.results``, the fetch); first
  task started → its result produced (the 0.2 s task, produce, flush);
* ``drained``: burst → the last of the burst's results.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from agents.runtime.manifest import builtin_manifests_dir
from bench.report import BenchResult, PathResult, Run
from bench.stack import delete_topics
from buildkit.catalog import AGENT_TASK_PARTITIONS, Catalog, default_catalog, task_spec
from buildkit.contracts.events import (
    AgentHeartbeat,
    AgentResult,
    AgentTask,
    ReplicaState,
    TaskStatus,
)
from buildkit.contracts.swarm import (
    ReplicaEvent,
    ReplicaEventKind,
    ScalingAction,
    ScalingDecisionEvent,
)
from buildkit.kafka import next_batch
from buildkit.producer import PRODUCER_DEFAULTS, TypedProducer
from buildkit.serde import SerdeRegistry, decode_key
from buildkit.settings import Settings
from buildkit.topics import apply_topics

MANIFEST = builtin_manifests_dir() / "test-generator.yaml"
RESULTS = "bar.tasks.results"
HEARTBEATS = "bar.agents.heartbeats"
REPLICAS = "bar.swarm.replicas"
DECISIONS = "bar.swarm.decisions"
REPLICA_COUNTS = (1, 2, 4)
# The runner's consumer settings (TypedConsumer + AgentRunner), for the plain loops.
RUNNER_CONSUMER: dict[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "fetch.wait.max.ms": 100,
    "log_level": 0,
}
HEARTBEAT_S = 0.5  # throughput replicas: readiness is seen within this
SCALE_HEARTBEAT_S = 0.25  # scale-up replicas: the resolution of "first heartbeat"
SCALE_POLICY = {"minReplicas": 1, "maxReplicas": 4, "tasksPerAgent": 5, "scaleUpCooldown": 0}
CONTROLLER_INTERVAL_S = 0.5
SLEEP_S = 0.2
WARMUP_TASKS = 60


def replica_env(settings: Settings) -> dict[str, str]:
    """The BAR_* environment that points a child process at the bench stack."""
    return {
        **os.environ,
        "BAR_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "BAR_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "BAR_DATABASE_URL": settings.database_dsn(),
        "BAR_CLIENT_TIMEOUT_S": str(settings.client_timeout_s),
        "BAR_CONSUMER_SESSION_TIMEOUT_MS": str(settings.consumer_session_timeout_ms),
        "BAR_DATA_DIR": str(settings.data_dir),
    }


def _ms(at: datetime) -> float:
    return at.timestamp() * 1000.0


# -- child processes -----------------------------------------------------------------
class Processes:
    """The processes this benchmark starts itself; :meth:`stop_all` ends every one of them
    (SIGTERM: a runner finishes its task and leaves the group; SIGKILL after ``grace_s``)."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, label: str, argv: list[str], *, pipe: bool = False) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{label}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                env=self.env,
                stdout=subprocess.PIPE if pipe else log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        self.running.append((label, proc))
        return proc

    def check(self) -> None:
        """Raise, quoting its log, if a process exited while it should be serving."""
        for label, proc in self.running:
            if proc.poll() is not None:
                tail = (self.log_dir / f"{label}.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{label} exited with code {proc.returncode}:\n{tail}")

    def cpu_seconds(self) -> float:
        total = 0.0
        for _, proc in self.running:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(proc.pid).cpu_times()
                total += times.user + times.system
        return total

    def stop_all(self, grace_s: float = 15.0) -> None:
        for _, proc in self.running:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for _, proc in self.running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.running.clear()


def serve_command(agent: str, entrypoint: str, replica_id: str, heartbeat_s: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agents.runtime.serve",
        "--manifest",
        str(MANIFEST),
        "--entrypoint",
        entrypoint,
        "--name",
        agent,
        "--replica-id",
        replica_id,
        "--heartbeat-interval",
        str(heartbeat_s),
    ]


# -- what the bus says ---------------------------------------------------------------
@dataclass
class Seen:
    """The first result of a task: its CreateTime (ms) and, when decoded, the result."""

    create_ms: int
    result: AgentResult | None
    count: int = 1


@dataclass
class Tail:
    """Records of this benchmark's agents, read by assignment (no group) from where the
    topics ended when it started: results (by task-id prefix), heartbeats, replica events
    and scaling decisions (by agent name)."""

    settings: Settings
    agents: set[str] = field(default_factory=set)
    prefixes: tuple[str, ...] = ()
    decode_results: bool = False
    results: dict[str, Seen] = field(default_factory=dict)
    heartbeats: dict[str, list[AgentHeartbeat]] = field(default_factory=dict)
    replica_events: list[ReplicaEvent] = field(default_factory=list)
    decisions: list[ScalingDecisionEvent] = field(default_factory=list)
    duplicates: int = 0
    timestamp_types: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.serdes = SerdeRegistry(self.settings, default_catalog())
        self.consumer = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": f"bench-swarm-tail-{uuid.uuid4().hex[:6]}",  # assignment only
                    "enable.auto.commit": False,
                    # Every consumer tailing bar.tasks.results costs the broker per fetch
                    # (see the notes); times come from CreateTime, not from when we read.
                    "fetch.wait.max.ms": 100,
                    "log_level": 0,
                }
            )
        )
        timeout = self.settings.client_timeout_s
        md = self.consumer.list_topics(timeout=timeout)
        parts = []
        for topic in (RESULTS, HEARTBEATS, REPLICAS, DECISIONS):
            for p in sorted(md.topics[topic].partitions):
                # A lower bound of the end on the embedded broker: older records are
                # filtered out by name, and nothing newer is missed.
                high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=timeout
                )[1]
                parts.append(TopicPartition(topic, p, high))
        self.consumer.assign(parts)

    def poll(self, timeout_s: float = 0.05) -> None:
        for msg in next_batch(self.consumer, 5000, timeout_s):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(err)
                continue
            topic = msg.topic()
            if topic == RESULTS:
                task_id = decode_key(msg.key()) or ""
                if not task_id.startswith(self.prefixes):
                    continue
                seen = self.results.get(task_id)
                if seen is not None:
                    seen.count += 1
                    self.duplicates += 1
                    continue
                ts_type, ts = msg.timestamp()
                self.timestamp_types.add(ts_type)
                value = None
                if self.decode_results:
                    decoded = self.serdes.for_topic(RESULTS).decode(msg.value())
                    assert isinstance(decoded, AgentResult)
                    value = decoded
                self.results[task_id] = Seen(ts, value)
                continue
            event = self.serdes.for_topic(topic or "").decode(msg.value())
            if isinstance(event, AgentHeartbeat) and event.agent in self.agents:
                self.heartbeats.setdefault(event.replica_id, []).append(event)
            elif isinstance(event, ReplicaEvent) and event.agent_type in self.agents:
                self.replica_events.append(event)
            elif isinstance(event, ScalingDecisionEvent) and event.agent_type in self.agents:
                self.decisions.append(event)

    def wait(
        self,
        predicate: Callable[[], bool],
        timeout_s: float,
        what: str,
        check: Callable[[], None] | None = None,
        hold_s: float = 0.0,
    ) -> None:
        """Read until ``predicate`` holds (for ``hold_s`` on end); ``check`` raises to abort."""
        deadline = time.monotonic() + timeout_s
        since: float | None = None
        while True:
            self.poll()
            if check is not None:
                check()
            now = time.monotonic()
            if predicate():
                since = now if since is None else since
                if now - since >= hold_s:
                    return
            else:
                since = None
            if now > deadline:
                raise TimeoutError(f"{what}: not within {timeout_s:g}s")

    def answered(self, ids: Iterable[str]) -> Callable[[], bool]:
        pending = set(ids)

        def done() -> bool:
            pending.difference_update([t for t in pending if t in self.results])
            return not pending

        return done

    def split(self, agent: str, replicas: int) -> bool:
        """``replicas`` live replicas of ``agent`` hold all task partitions, none twice."""
        latest = [
            beats[-1]
            for beats in self.heartbeats.values()
            if beats[-1].agent == agent and beats[-1].state != ReplicaState.DRAINING
        ]
        held = [set(b.partitions) for b in latest]
        return (
            len(latest) == replicas
            and all(held)
            and sum(len(h) for h in held) == AGENT_TASK_PARTITIONS
            and set().union(*held) == set(range(AGENT_TASK_PARTITIONS))
        )

    def results_topic_size(self) -> int:
        """Records in ``bar.tasks.results`` (high watermarks: a lower bound on Tansu)."""
        md = self.consumer.list_topics(RESULTS, timeout=self.settings.client_timeout_s)
        return sum(
            self.consumer.get_watermark_offsets(
                TopicPartition(RESULTS, p), timeout=self.settings.client_timeout_s
            )[1]
            for p in md.topics[RESULTS].partitions
        )

    def close(self) -> None:
        self.consumer.close()


# -- CPU accounting ------------------------------------------------------------------
def _broker_process(settings: Settings) -> psutil.Process | None:
    """The Tansu child of this process serving ``settings.bootstrap_servers``."""
    url = f"tcp://{settings.bootstrap_servers}"
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if url in child.cmdline():
                return child
    return None


def _cpu(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    with contextlib.suppress(psutil.Error):
        times = proc.cpu_times()
        return times.user + times.system
    return 0.0


@dataclass
class CpuMark:
    workers: float
    broker: float
    bench: float
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, workers: Processes, broker: psutil.Process | None) -> CpuMark:
        machine = psutil.cpu_times()
        idle = machine.idle + getattr(machine, "iowait", 0.0)
        total = sum(machine)
        return cls(workers.cpu_seconds(), _cpu(broker), _cpu(psutil.Process()), total - idle, total)

    def since(self, before: CpuMark, tasks: int) -> dict[str, float]:
        per = 1e6 / tasks
        total = self.machine_total - before.machine_total
        return {
            "workers_us_per_task": round((self.workers - before.workers) * per, 1),
            "broker_us_per_task": round((self.broker - before.broker) * per, 1),
            "bench_us_per_task": round((self.bench - before.bench) * per, 1),
            "machine_busy_percent": round(
                100 * (self.machine_busy - before.machine_busy) / total if total else 0.0, 1
            ),
        }


# -- throughput ----------------------------------------------------------------------
@dataclass
class Throughput:
    """Sends tasks to a set of consumers and times their results."""

    settings: Settings
    tail: Tail
    procs: Processes
    broker: psutil.Process | None
    producer: TypedProducer
    cpu: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def send(self, agent: str, ids: list[str]) -> float:
        """Produce one task per id, acknowledged; the wall time just before the first."""
        topic = f"bar.tasks.{agent}"
        now = datetime.now(UTC)
        tasks = [AgentTask(task_id=t, agent=agent, created_at=now) for t in ids]
        began = time.time()
        for task in tasks:
            self.producer.produce(topic, task, key=task.task_id)
        self.producer.flush()
        return began

    def batch(self, agent: str, label: str, n: int, path: str | None) -> Run:
        ids = [f"{agent}-{label}-{i:05d}" for i in range(n)]
        before = CpuMark.take(self.procs, self.broker)
        began = self.send(agent, ids)
        self.tail.wait(
            self.tail.answered(ids), 60 + n / 50, f"{n} results of {agent}", self.procs.check
        )
        after = CpuMark.take(self.procs, self.broker)
        ended_ms = max(self.tail.results[t].create_ms for t in ids)
        if path is not None:
            self.cpu.setdefault(path, []).append(after.since(before, n))
        return Run(max(1e-3, ended_ms / 1000.0 - began), n)

    def measure(
        self, path: PathResult, agent: str, n: int, repeats: int, ready: Callable[[], bool]
    ) -> None:
        """Wait for ``ready`` (held a second), warm up, then time ``repeats`` batches."""
        self.tail.wait(ready, 90, f"{path.name}: partitions assigned", self.procs.check, 1.0)
        self.batch(agent, "warm", WARMUP_TASKS, None)
        for rep in range(repeats):
            run = self.batch(agent, f"r{rep}", n, path.name)
            path.runs.append(run)
            cpu = self.cpu[path.name][-1]
            print(
                f"  {path.name:<16} run {rep + 1}/{repeats}: {run.records_per_s:>8,.0f} tasks/s "
                f"({n} in {run.seconds:.2f}s; CPU/task µs: workers {cpu['workers_us_per_task']}, "
                f"broker {cpu['broker_us_per_task']}; machine {cpu['machine_busy_percent']}% busy)",
                flush=True,
            )


def _follow_assignment(proc: subprocess.Popen[bytes], held: set[int]) -> None:
    """Keep ``held`` = the partitions a plain loop reports on its stdout."""
    assert proc.stdout is not None
    with contextlib.suppress(ValueError, OSError):  # the pipe closed under us: it stopped
        for line in proc.stdout:
            assigned = json.loads(line)["assigned"]
            held.clear()
            held.update(assigned)


def _holds_all(held: set[int]) -> bool:
    return len(held) == AGENT_TASK_PARTITIONS


def throughput(
    settings: Settings,
    tail: Tail,
    procs: Processes,
    tag: str,
    tasks: int,
    plain_tasks: int,
    repeats: int,
) -> tuple[
    dict[str, PathResult], dict[str, list[dict[str, float]]], dict[str, Any], dict[str, Any]
]:
    """Every path, one set of processes after another: the replicas (1, 2, 4), then the
    plain loops (``plain_batched`` last: its many results would otherwise fill the
    results topic every replica tails and catches up with)."""
    agents = {f"{tag}-n{n}": n for n in REPLICA_COUNTS}
    plains = {"plain_per_task": f"{tag}-pt", "plain_batched": f"{tag}-pb"}
    catalog = Catalog([*default_catalog(), *(task_spec(a) for a in [*agents, *plains.values()])])
    apply_topics(settings, catalog)
    tail.agents.update(agents)
    tail.prefixes += tuple(f"{a}-" for a in [*agents, *plains.values()])
    producer = TypedProducer(settings, catalog=catalog, source="bench")
    bench = Throughput(settings, tail, procs, _broker_process(settings), producer)
    paths: dict[str, PathResult] = {}
    before: dict[str, Any] = {}
    probe: dict[str, Any] = {}
    try:
        for agent, count in agents.items():
            name = f"replicas_{count}"
            path = paths[name] = PathResult(
                name,
                f"{count} runtime replica process(es) of agents.samples:EchoAgent "
                "(agents.runtime.serve), group bar-agent-<name>, 24 partitions",
            )
            before[name] = _conditions(tail)
            for i in range(count):
                procs.start(
                    f"{agent}-r{i}",
                    serve_command(agent, "agents.samples:EchoAgent", f"{agent}-r{i}", HEARTBEAT_S),
                )
            try:
                bench.measure(
                    path, agent, tasks, repeats, functools.partial(tail.split, agent, count)
                )
            finally:
                procs.stop_all()
        # The catch-up a new replica does, on the results the replicas just wrote.
        probe = catch_up_probe(settings)
        for name, agent in plains.items():
            per_task = name == "plain_per_task"
            cadence = (
                "flush + commit per task" if per_task else "≤ 500 per poll, one flush + commit"
            )
            path = paths[name] = PathResult(
                name,
                "one plain confluent-kafka consume→produce process, the runner's consumer "
                f"settings, same Avro bytes; {cadence}",
                role="baseline",
            )
            before[name] = _conditions(tail)
            argv = [sys.executable, "-m", "bench.bench_swarm", "--agent", agent]
            proc = procs.start(name, [*argv, *(["--per-task"] if per_task else [])], pipe=True)
            held: set[int] = set()
            threading.Thread(target=_follow_assignment, args=(proc, held), daemon=True).start()
            n = tasks if per_task else plain_tasks
            try:
                bench.measure(path, agent, n, repeats, functools.partial(_holds_all, held))
            finally:
                procs.stop_all()
    finally:
        producer.close()
        delete_topics(settings, [f"bar.tasks.{a}" for a in [*agents, *plains.values()]])
    return paths, bench.cpu, before, probe


def _conditions(tail: Tail) -> dict[str, Any]:
    """What a set of processes starts with: how full the results topic is, how loaded
    the machine is (other users' work included)."""
    return {
        "results_topic_records": tail.results_topic_size(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def catch_up_probe(settings: Settings) -> dict[str, Any]:
    """A fresh :class:`AnsweredTasks` with the runtime's lookback catching up with
    ``bar.tasks.results``, alone on an idle broker: what a new replica does between its
    assignment and its first task."""
    from agents.runtime.answered import DEFAULT_LOOKBACK, AnsweredTasks

    with AnsweredTasks(settings, RESULTS) as answered:
        began = time.monotonic()
        read = answered.catch_up()
        seconds = time.monotonic() - began
    print(f"  catch-up: {read:,} results in {seconds:.2f}s", flush=True)
    return {
        "lookback_per_partition": DEFAULT_LOOKBACK,
        "results_read": read,
        "seconds": round(seconds, 3),
        "results_per_s": round(read / seconds) if seconds > 0 else 0,
    }


# -- the plain loop (a child process) ------------------------------------------------
def plain_loop(settings: Settings, agent: str, per_task: bool, stop: threading.Event) -> None:
    """Answer every task of ``bar.tasks.<agent>`` with the EchoAgent's result, until ``stop``."""
    topic = f"bar.tasks.{agent}"
    serdes = SerdeRegistry(settings, Catalog([*default_catalog(), task_spec(agent)]))
    tasks, results = serdes.for_topic(topic), serdes.for_topic(RESULTS)
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"bench-plain-{agent}",
                "session.timeout.ms": settings.consumer_session_timeout_ms,
                **RUNNER_CONSUMER,
            }
        )
    )
    producer = Producer(settings.kafka_config(**PRODUCER_DEFAULTS))
    held: set[int] = set()

    def report(partitions: list[TopicPartition], assigned: bool) -> None:
        for tp in partitions:
            (held.add if assigned else held.discard)(tp.partition)
        print(json.dumps({"assigned": sorted(held)}), flush=True)

    consumer.subscribe(
        [topic],
        on_assign=lambda c, ps: report(ps, True),
        on_revoke=lambda c, ps: report(ps, False),
        on_lost=lambda c, ps: report(ps, False),
    )

    def commit(offsets: dict[int, int]) -> None:
        with contextlib.suppress(KafkaException):  # a rebalance voided it: redelivered
            consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )

    try:
        while not stop.is_set():
            offsets: dict[int, int] = {}
            for msg in next_batch(consumer, 1 if per_task else 500, 0.2):
                if msg.error() is not None:
                    continue
                task = tasks.decode(msg.value())
                assert isinstance(task, AgentTask)
                started = datetime.now(UTC)
                result = AgentResult(
                    task_id=task.task_id,
                    agent=task.agent,
                    run_id=task.run_id,
                    stage=task.stage,
                    attempt=task.attempt,
                    status=TaskStatus.SUCCEEDED,
                    metrics={"echo": 1.0},
                    outputs={"task": task.task_id},
                    started_at=started,
                    finished_at=datetime.now(UTC),
                    replica_id=f"plain-{os.getpid()}",
                )
                producer.produce(RESULTS, results.encode(result), msg.key())
                producer.poll(0)
                offsets[msg.partition() or 0] = (msg.offset() or 0) + 1
                if per_task:
                    producer.flush()
                    commit(offsets)
                    offsets = {}
            if offsets:
                producer.flush()
                commit(offsets)
    finally:
        producer.flush(10)
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_swarm",
        description="The SWARM benchmark's baseline: a plain consume→produce loop.",
    )
    parser.add_argument("--agent", required=True, help="consume bar.tasks.<agent>")
    parser.add_argument("--per-task", action="store_true", help="flush + commit every task")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    plain_loop(Settings(), args.agent, args.per_task, stop)
    return 0


# -- scale-up reaction ---------------------------------------------------------------
def _assigned_at_from_log(log: Path, replica_id: str) -> float | None:
    """Epoch ms of the replica's first "assigned … partitions" log line, if any."""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if f"{replica_id}: assigned " in line:
                with contextlib.suppress(ValueError):
                    # logging's asctime, local time: "2026-11-25 12:00:00,123"
                    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                    return stamp.timestamp() * 1000.0
    return None


def scale_up_once(
    settings: Settings, tail: Tail, log_dir: Path, agent: str, burst: int
) -> dict[str, Any]:
    """One burst against a fresh 1-replica deployment; the timings, in seconds."""
    from streams.swarm.api import Swarm
    from streams.swarm.local import LocalBackend

    tail.agents.add(agent)
    tail.prefixes += (f"{agent}-",)
    tail.decode_results = True
    backend = LocalBackend(
        env=replica_env(settings),
        heartbeat_interval_s=SCALE_HEARTBEAT_S,
        log_dir=log_dir,
        stop_grace_s=15,
    )
    swarm: Swarm | None = None
    try:
        swarm = Swarm(settings, backend, interval_s=CONTROLLER_INTERVAL_S)
        sw = swarm

        def healthy() -> None:
            if sw.error is not None:
                raise RuntimeError(f"the SWARM controller stopped: {sw.error!r}")

        sw.spawn_agent(
            MANIFEST, entrypoint="agents.samples:SleepyAgent", name=agent, scaling=SCALE_POLICY
        )
        tail.wait(lambda: tail.split(agent, 1), 90, f"{agent}: first replica", healthy, 1.0)
        # One task first: the result watcher and dispatcher open, and the running replica
        # does its catch-up with bar.tasks.results, all before the clock starts.
        warm = sw.create_tasks(agent, [{"sleep_s": 0}])
        tail.wait(tail.answered(warm), 120, f"{agent}: warm-up result", healthy)
        results_topic = tail.results_topic_size()
        before = set(backend.live_replicas(agent))
        burst_ms = time.time() * 1000.0
        ids = sw.create_tasks(agent, [{"sleep_s": SLEEP_S, "n": i} for i in range(burst)])
        sent_ms = time.time() * 1000.0
        tail.wait(tail.answered(ids), 120, f"{agent}: {burst} results", healthy)
        tail.poll(0.3)  # the decisions and replica events published meanwhile
        replicas_max = backend.replicas(agent)
    finally:
        if swarm is not None:
            swarm.close()
        else:
            backend.close()

    seen = [tail.results[t] for t in ids]
    fresh = [s for s in seen if s.result is not None and s.result.replica_id not in before]
    if not fresh:
        raise RuntimeError(f"{agent}: no result came from a replica started after the burst")
    first = min(fresh, key=lambda s: s.create_ms)
    assert first.result is not None
    replica = first.result.replica_id or ""
    ups = [
        _ms(d.at)
        for d in tail.decisions
        if d.agent_type == agent and d.action == ScalingAction.UP and _ms(d.at) >= burst_ms - 1
    ]
    started = [
        _ms(e.at)
        for e in tail.replica_events
        if e.replica_id == replica and e.kind == ReplicaEventKind.STARTED
    ]
    beats = tail.heartbeats.get(replica, [])
    if not ups or not started or not beats:
        raise RuntimeError(
            f"{agent}: missing events for {replica} (decisions {len(ups)}, "
            f"started {len(started)}, heartbeats {len(beats)})"
        )
    decision, process, first_beat = min(ups), min(started), min(_ms(b.sent_at) for b in beats)
    assigned = _assigned_at_from_log(log_dir / f"{replica}.log", replica)
    assigned_from = "replica log"
    if assigned is None:
        assigned_from = "first heartbeat listing partitions"
        assigned = min(_ms(b.sent_at) for b in beats if b.partitions)
    mine = [s.result for s in fresh if s.result is not None and s.result.replica_id == replica]
    task_started = min(_ms(r.started_at) for r in mine)
    started_new = [s.result.started_at for s in fresh if s.result is not None]
    new_replicas = {
        e.replica_id
        for e in tail.replica_events
        if e.agent_type == agent
        and e.kind == ReplicaEventKind.STARTED
        and e.replica_id not in before
    }

    def s(a: float, b: float) -> float:
        return round((b - a) / 1000.0, 3)

    return {
        "agent": agent,
        "replica": replica,
        "assigned_time_from": assigned_from,
        "new_replicas": len(new_replicas),
        "replicas_at_end": replicas_max,
        "results_topic_records": results_topic,
        "send_s": s(burst_ms, sent_ms),
        "decision_s": s(burst_ms, decision),
        "first_new_task_started_s": s(burst_ms, min(_ms(t) for t in started_new)),
        "first_new_result_s": s(burst_ms, first.create_ms),
        "drained_s": s(burst_ms, max(x.create_ms for x in seen)),
        "phases_s": {
            "burst_to_decision": s(burst_ms, decision),
            "decision_to_process_started": s(decision, process),
            "process_started_to_first_heartbeat": s(process, first_beat),
            "first_heartbeat_to_partitions_assigned": s(first_beat, assigned),
            "partitions_assigned_to_first_task_started": s(assigned, task_started),
            "first_task_started_to_result": s(task_started, first.create_ms),
        },
        "results_per_task_max": max(x.count for x in seen),
    }


def _median_max(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> dict[str, float]:
    values = [float(r[sub][key] if sub else r[key]) for r in runs]
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def scale_up(
    settings: Settings, tail: Tail, log_dir: Path, tag: str, repeats: int, burst: int
) -> dict[str, Any]:
    runs = []
    for rep in range(repeats):
        run = scale_up_once(settings, tail, log_dir, f"{tag}-up{rep}", burst)
        runs.append(run)
        print(
            f"  scale-up run {rep + 1}/{repeats}: decision {run['decision_s']:.2f}s, first new "
            f"replica's task started {run['first_new_task_started_s']:.2f}s, its result "
            f"{run['first_new_result_s']:.2f}s, burst drained {run['drained_s']:.2f}s "
            f"({run['new_replicas']} new replicas)",
            flush=True,
        )
    keys = ["decision_s", "first_new_task_started_s", "first_new_result_s", "drained_s"]
    return {
        "policy": SCALE_POLICY,
        "controller_interval_s": CONTROLLER_INTERVAL_S,
        "heartbeat_interval_s": SCALE_HEARTBEAT_S,
        "burst_tasks": burst,
        "sleep_s_per_task": SLEEP_S,
        "one_replica_would_take_s": round(burst * SLEEP_S, 1),
        "summary_s": {k: _median_max(runs, k) for k in keys},
        "phases_s": {k: _median_max(runs, k, "phases_s") for k in runs[0]["phases_s"]},
        "runs": runs,
    }


# -- the benchmark -------------------------------------------------------------------
@dataclass
class SwarmResult(BenchResult):
    """A BenchResult with the scaling efficiency and the scale-up reaction times."""

    scaling: dict[str, Any] = field(default_factory=dict)
    scale_up: dict[str, Any] = field(default_factory=dict)
    catch_up: dict[str, Any] = field(default_factory=dict)

    def to_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        doc = super().to_json(machine)
        doc["scaling"] = self.scaling
        doc["scale_up"] = self.scale_up
        doc["catch_up"] = self.catch_up
        return doc


def _scaling(
    paths: dict[str, PathResult], cpu: dict[str, list[dict[str, float]]]
) -> dict[str, Any]:
    tps = {n: paths[f"replicas_{n}"].median_rps for n in REPLICA_COUNTS}
    one = tps[1]
    out: dict[str, Any] = {
        "tasks_per_s": {str(n): round(v, 1) for n, v in tps.items()},
        "speedup": {str(n): round(v / one, 3) if one else 0.0 for n, v in tps.items()},
        "efficiency": {str(n): round(v / (n * one), 3) if one else 0.0 for n, v in tps.items()},
        "efficiency_formula": "tps(N) / (N x tps(1)), medians",
        "cpu_median": {
            name: {k: statistics.median(run[k] for run in runs) for k in runs[0]}
            for name, runs in cpu.items()
        },
    }
    for base in ("plain_per_task", "plain_batched"):
        if base in paths and paths[base].median_rps:
            out[f"replicas_1/{base}"] = round(one / paths[base].median_rps, 3)
    return out


def bench_swarm(
    settings: Settings,
    repeats: int,
    tasks: int = 800,
    plain_tasks: int = 30_000,
    burst: int = 100,
    scale_repeats: int = 3,
) -> BenchResult:
    apply_topics(settings, default_catalog())
    tag = f"bench-{uuid.uuid4().hex[:6]}"
    log_dir = settings.data_dir.parent / "swarm-bench"
    procs = Processes(log_dir, replica_env(settings))
    tail = Tail(settings)
    try:
        # Scale-up first, while bar.tasks.results is short (see the notes on catch-up).
        print(f"  scale-up: bursts of {burst} tasks, {scale_repeats} times…", flush=True)
        reaction = scale_up(settings, tail, log_dir, tag, scale_repeats, burst)
        print(f"  throughput: {tasks} tasks per run, replicas 1/2/4 and the plain loops…")
        paths, cpu, before, probe = throughput(
            settings, tail, procs, tag, tasks, plain_tasks, repeats
        )
    finally:
        procs.stop_all()
        tail.close()
    scaling = _scaling(paths, cpu)
    eff, cores = scaling["efficiency"], os.cpu_count()
    broker = {n: scaling["cpu_median"][f"replicas_{n}"]["broker_us_per_task"] for n in (1, 4)}
    timestamps = sorted(tail.timestamp_types)
    return SwarmResult(
        name="swarm",
        title="SWARM: tasks/s with 1, 2, 4 replicas of an immediate-answer agent; "
        "burst → first new replica's work",
        parameters={
            "tasks_per_run": tasks,
            "plain_batched_tasks_per_run": plain_tasks,
            "warmup_tasks": WARMUP_TASKS,
            "repeats": repeats,
            "task_partitions": AGENT_TASK_PARTITIONS,
            "agent": "agents.samples:EchoAgent (answers at once) via python -m "
            "agents.runtime.serve, one process per replica",
            "replica_heartbeat_interval_s": HEARTBEAT_S,
            "plain_loop": "python -m bench.bench_swarm: confluent-kafka Consumer/Producer, the "
            "runner's consumer settings and PRODUCER_DEFAULTS, values encoded with the "
            "project's SerdeRegistry (same Avro bytes as the runtime), no headers",
            "timing": "first task sent (time.time()) → CreateTime of the last result"
            + (" (CreateTime confirmed)" if timestamps == [TIMESTAMP_CREATE_TIME] else ""),
            "set_start_conditions": before,
            "duplicate_results": tail.duplicates,
            "consumer_session_timeout_ms": settings.consumer_session_timeout_ms,
            "scale_up_repeats": scale_repeats,
            "burst_tasks": burst,
        },
        paths=paths,
        notes=[
            f"{cores} cores run the broker, the replicas, this process and whatever else runs "
            f"on the machine: N replicas cannot do N times the work of one. Efficiency "
            f"tps(N)/(N x tps(1)), medians: 2 replicas {eff['2']:.2f}, 4 replicas "
            f"{eff['4']:.2f}. scaling.cpu_median says where the CPU went per task: workers = "
            "the replica or plain-loop processes, broker = Tansu, bench = this process; "
            "machine_busy_percent is of all cores, other users' processes included.",
            "Each replica produces a result per task and flushes + commits once per batch (a "
            "batch ends after 0.2 s of work, at most 200 tasks): at-least-once with "
            "cross-replica de-duplication. plain_per_task pays two broker round trips per task "
            "without the runtime; plain_batched amortizes them over up to 500.",
            f"Broker CPU per task: {broker[1]:.0f} µs with 1 replica, {broker[4]:.0f} µs with "
            "4. Each replica's de-duplication reader pauses its bar.tasks.results partitions "
            "between catch-ups (it used to keep fetching every new result: observed then, "
            "about 0.4 ms of broker CPU per result with no such reader, 0.8 ms with one, "
            "2.9 ms with four).",
            "The sets are measured one after another (each set's processes stopped before the "
            "next starts), each on a fresh task topic and consumer group, after a warm-up "
            "batch; set_start_conditions has the sum of bar.tasks.results' high watermarks "
            "(a lower bound on Tansu) and the load average when each set started.",
            "scale_up: times from the burst (this process's clock) to events on the bus "
            "(decision at, ReplicaEvent at, heartbeat sent_at, result started_at / CreateTime), "
            "all on this machine's clock. The running replica answered one task before the "
            "burst (its own catch-up is not counted). A new replica's join is a cooperative "
            "rebalance with the busy replica; its first task waits for its catch-up with "
            "bar.tasks.results.",
            f"catch_up: a fresh de-duplication reader (the runtime's lookback) read "
            f"{probe.get('results_read', 0):,} results in {probe.get('seconds', 0)} s, alone on "
            "an idle broker. It reads up to 10,000 results per partition, and on Tansu a fetch "
            "costs more the more record batches the topic holds: the scale-up runs go first, "
            "while bar.tasks.results is short, so "
            "their partitions_assigned_to_first_task_started is the best case. Observed "
            "separately on this machine: one reader alone read 48,000 such results in 3.4 s; "
            "during a scale-up with ~42,000 in the topic, the running replica's catch-up took "
            "28 s and the three new replicas, catching up at once, had not finished after 90 s.",
            f"The group join (first_heartbeat_to_partitions_assigned) follows the consumer "
            f"session timeout, {settings.consumer_session_timeout_ms} ms here (the bench "
            "stack's): observed separately, about 15 s at 10,000 ms (BAR_CONSUMER_SESSION_"
            "TIMEOUT_MS's default) and 36 s at 20,000 ms, against about 3 s for the first "
            "replica joining an empty group.",
        ],
        scaling=scaling,
        scale_up=reaction,
        catch_up=probe,
    )


if __name__ == "__main__":
    sys.exit(main())

"""(e) ROE: completed 4-stage workflows per second, and the stage-to-stage hop latency.

The engine runs as production runs it, a subprocess ``python -m streams.roe``
against the bench stack (its own process: no GIL shared with the agents). The
agents of the built-in feature workflow are one immediate-answer loop in a
thread of this process: it reads ``bar.tasks.<agent>`` for the 4 agents and
answers each task on ``bar.tasks.results`` at once (an artifact reference per
declared output, metrics that pass the quality gate), flushing after each batch.

Measured (all times from this machine's one wall clock, in ms):

* ``hop`` (the goal): the agent's send time of a stage's result (``time.time()``
  just before ``produce``; librdkafka stamps the record's CreateTime at the same
  moment) to the CreateTime of the next stage's task record, stamped by the
  engine's producer when it produces it — the engine's consume + decide + produce.
* ``visible_hop``: the same result send time to the moment the agent *received*
  the next task: adds the engine's transaction commit and the agent's fetch.
* ``start_hop``: START command send time to the first task's CreateTime.
* throughput: N START commands at once; wall time from the first send until a
  tail of ``bar.roe.events`` saw WORKFLOW_SUCCEEDED (or FAILED) for all of them.

Latency is measured on runs started one after another (the hop itself, not
queueing), and again on the throughput runs (``under_load``, info).

Baselines on the same broker, same clock: ``broker_hop`` — produce one record
(``PRODUCER_DEFAULTS``, flushed as the agents do) until another consumer with the
engine's consumer settings (read_committed, fetch.wait.max.ms 20) received it;
``txn_relay_hop`` — the same, through a relay doing the engine's loop without
the decider (``next_batch``, produce in a transaction with the engine's producer
settings, ``send_offsets_to_transaction``, commit) to a consumer with the agents'
settings: the floor for ``visible_hop``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    Producer,
    TopicPartition,
)

from agents.simulated import simulated_result
from bench.report import BenchResult, PathResult, Run
from bench.stack import delete_topics, fresh_topic
from buildkit.catalog import default_catalog
from buildkit.contracts.events import AgentResult, AgentTask
from buildkit.contracts.roe import (
    WorkflowCommand,
    WorkflowCommandKind,
    WorkflowEvent,
    WorkflowEventKind,
)
from buildkit.kafka import next_batch
from buildkit.producer import PRODUCER_DEFAULTS, TypedProducer
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from streams.roe.model import WorkflowSpec
from streams.roe.spec import builtin_workflows, load_workflow

RESULTS = "bar.tasks.results"
COMMANDS = "bar.roe.commands"
EVENTS = "bar.roe.events"
METRICS = {"coverage": 91.0, "phpcs violations": 0.0}
GOAL_P99_MS = 50.0
# The engine's consumer / producer settings (streams/roe/engine.py), for the baselines.
ENGINE_CONSUMER = {"isolation.level": "read_committed", "fetch.wait.max.ms": 20}
ENGINE_PRODUCER = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 1,
    "allow.auto.create.topics": False,
}
AGENT_CONSUMER = {"fetch.wait.max.ms": 10}
TERMINAL = {
    WorkflowEventKind.WORKFLOW_SUCCEEDED,
    WorkflowEventKind.WORKFLOW_FAILED,
    WorkflowEventKind.WORKFLOW_CANCELLED,
}


def feature_workflow() -> WorkflowSpec:
    path = next(p for p in builtin_workflows() if p.name == "feature-workflow.yml")
    return load_workflow(path)


def now_ms() -> float:
    return time.time() * 1000.0


def _assign_from_end(consumer: Consumer, settings: Settings, topics: list[str]) -> None:
    """Assign every partition of ``topics`` at its current end (nothing older is read)."""
    md = consumer.list_topics(timeout=settings.client_timeout_s)
    consumer.assign(
        [
            TopicPartition(
                t,
                p,
                consumer.get_watermark_offsets(
                    TopicPartition(t, p), timeout=settings.client_timeout_s
                )[1],
            )
            for t in topics
            for p in sorted(md.topics[t].partitions)
        ]
    )


# -- the agents ----------------------------------------------------------------------
@dataclass
class Seen:
    create_ms: int  # the task record's CreateTime (engine producer)
    recv_ms: float  # when the agent loop got it


class Agents(threading.Thread):
    """Answers every task of ``agents`` at once on ``bar.tasks.results``."""

    def __init__(self, settings: Settings, agents: list[str]) -> None:
        super().__init__(name="bench-roe-agents", daemon=True)
        self.settings = settings
        self.agents = agents
        self.received: dict[str, Seen] = {}
        self.sent: dict[str, float] = {}  # result's task id -> send time
        self.timestamp_types: set[int] = set()
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the benchmark
            self.error = exc
            self.ready.set()

    def _loop(self) -> None:
        catalog = default_catalog()
        serdes = SerdeRegistry(self.settings, catalog)
        consumer = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": "bench-roe-agents",
                    "enable.auto.commit": False,
                    "log_level": 0,
                    **AGENT_CONSUMER,
                }
            )
        )
        producer = TypedProducer(self.settings, catalog=catalog, serdes=serdes, source="bench")
        producer.check_topics([RESULTS])
        serdes.for_topic(RESULTS)
        try:
            _assign_from_end(consumer, self.settings, [f"bar.tasks.{a}" for a in self.agents])
            self.ready.set()
            while not self.stop.is_set():
                batch = next_batch(consumer, 500, 0.05)
                got = now_ms()
                answered = False
                for msg in batch:
                    if msg.error() is not None:
                        continue
                    task = serdes.for_topic(msg.topic() or "").decode(msg.value())
                    assert isinstance(task, AgentTask)
                    ts_type, ts = msg.timestamp()
                    self.timestamp_types.add(ts_type)
                    if task.task_id in self.received:
                        continue  # answer once per task id
                    self.received[task.task_id] = Seen(ts, got)
                    result = simulated_result(task, METRICS)
                    self.sent[task.task_id] = now_ms()
                    producer.produce(RESULTS, result, key=task.task_id)
                    answered = True
                if answered:
                    producer.flush()
        finally:
            consumer.close()

    def halt(self) -> None:
        self.stop.set()
        self.join(10)


# -- the engine, the commands and the tail of bar.roe.events -------------------------
@contextlib.contextmanager
def engine_process(settings: Settings, log_path: Path) -> Any:
    env = {
        **os.environ,
        "BAR_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "BAR_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "BAR_DATABASE_URL": settings.database_url.get_secret_value(),
        "BAR_CLIENT_TIMEOUT_S": str(settings.client_timeout_s),
        "BAR_CONSUMER_SESSION_TIMEOUT_MS": str(settings.consumer_session_timeout_ms),
        "BAR_DATA_DIR": str(settings.data_dir),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.roe"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        proc.terminate()  # SIGTERM: the engine finishes its batch and stops
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Tail:
    """Terminal events of runs, read from ``bar.roe.events`` (read_committed)."""

    def __init__(self, settings: Settings) -> None:
        self.serde = SerdeRegistry(settings, default_catalog()).for_topic(EVENTS)
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": "bench-roe-tail",
                    "enable.auto.commit": False,
                    "log_level": 0,
                    **ENGINE_CONSUMER,
                }
            )
        )
        _assign_from_end(self.consumer, settings, [EVENTS])
        self.done: dict[str, WorkflowEventKind] = {}
        self.done_create_ms: dict[str, int] = {}

    def wait(self, run_ids: list[str], timeout: float) -> float:
        """Read until every run in ``run_ids`` ended; the wall time (ms) it was seen."""
        deadline = time.monotonic() + timeout
        pending = {r for r in run_ids if r not in self.done}
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)}/{len(run_ids)} run(s) not done in {timeout}s")
            for msg in next_batch(self.consumer, 1000, 0.1):
                if msg.error() is not None:
                    continue
                event = self.serde.decode(msg.value())
                assert isinstance(event, WorkflowEvent)
                if event.kind in TERMINAL:
                    self.done[event.run_id] = event.kind
                    self.done_create_ms[event.run_id] = msg.timestamp()[1]
                    pending.discard(event.run_id)
        return now_ms()

    def close(self) -> None:
        self.consumer.close()


class Starter:
    def __init__(self, settings: Settings, spec: WorkflowSpec) -> None:
        self.spec = spec
        self.spec_json = spec.model_dump_json()
        self.producer = TypedProducer(settings, source="bench")
        self.producer.check_topics([COMMANDS])
        self.sent: dict[str, float] = {}

    def start(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            command = WorkflowCommand(
                command_id=f"cmd-{run_id}",
                run_id=run_id,
                kind=WorkflowCommandKind.START,
                workflow_id=self.spec.workflow_id,
                spec_json=self.spec_json,
                inputs={"issueId": "1"},
                requested_at=datetime.now(UTC),
            )
            self.sent[run_id] = now_ms()
            self.producer.produce(COMMANDS, command, key=run_id)
        self.producer.flush()


# -- numbers -------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def summarize(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50": round(percentile(values, 0.50), 2),
        "p90": round(percentile(values, 0.90), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
        "mean": round(sum(values) / len(values), 2),
    }


def hops(
    run_ids: list[str], stages: list[str], agents: Agents, starter: Starter, tail: Tail
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"hop": [], "visible_hop": [], "start_hop": [], "finish_hop": []}
    for run_id in run_ids:
        first = agents.received.get(f"{run_id}.{stages[0]}.1")
        if first is not None:
            out["start_hop"].append(first.create_ms - starter.sent[run_id])
        for prev, stage in itertools.pairwise(stages):
            sent = agents.sent.get(f"{run_id}.{prev}.1")
            seen = agents.received.get(f"{run_id}.{stage}.1")
            if sent is None or seen is None:
                continue
            out["hop"].append(seen.create_ms - sent)
            out["visible_hop"].append(seen.recv_ms - sent)
        last = agents.sent.get(f"{run_id}.{stages[-1]}.1")
        if last is not None and run_id in tail.done_create_ms:
            out["finish_hop"].append(tail.done_create_ms[run_id] - last)
    return out


# -- baselines -----------------------------------------------------------------------
def hop_baseline(
    settings: Settings, n: int, relay: bool, fetch_wait_ms: int | None = None
) -> list[float]:
    """Round trips of one record at a time: send time (in the value) to receipt."""
    source = fresh_topic(settings, "roe.hop", AgentResult)
    topics = [source]
    sink_topic = source
    stop = threading.Event()
    relay_thread: threading.Thread | None = None
    if relay:
        sink_topic = fresh_topic(settings, "roe.relay", AgentResult)
        topics.append(sink_topic)
        relay_thread = threading.Thread(
            target=_relay, args=(settings, source, sink_topic, stop), daemon=True
        )
        relay_thread.start()
    producer = Producer(settings.kafka_config(**PRODUCER_DEFAULTS))
    sink_conf = AGENT_CONSUMER if relay else ENGINE_CONSUMER
    if fetch_wait_ms is not None:
        sink_conf = sink_conf | {"fetch.wait.max.ms": fetch_wait_ms}
    sink = Consumer(
        settings.kafka_config(
            **{"group.id": "bench-roe-sink", "enable.auto.commit": False, "log_level": 0}
            | sink_conf
        )
    )
    sink.assign([TopicPartition(sink_topic, 0, OFFSET_BEGINNING)])
    warmup = 10
    out: list[float] = []
    try:
        for i in range(n + warmup):
            producer.produce(source, f"{now_ms():.3f}".encode())
            producer.flush(10)
            deadline = time.monotonic() + 10
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"hop baseline: record {i} not received in 10s")
                msg = sink.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                if i >= warmup:
                    out.append(now_ms() - float(msg.value() or b"0"))
                break
    finally:
        stop.set()
        if relay_thread is not None:
            relay_thread.join(10)
        sink.close()
        delete_topics(settings, topics)
    return out


def _relay(settings: Settings, source: str, sink: str, stop: threading.Event) -> None:
    """The engine's transaction loop without the decider: input -> output, exactly once."""
    producer = Producer(
        settings.kafka_config(
            **{"transactional.id": f"bench-relay-{uuid.uuid4().hex[:8]}", "log_level": 0}
            | ENGINE_PRODUCER
        )
    )
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": "bench-relay", "enable.auto.commit": False, "log_level": 0}
            | ENGINE_CONSUMER
        )
    )
    producer.init_transactions(settings.client_timeout_s * 2)
    consumer.assign([TopicPartition(source, 0, OFFSET_BEGINNING)])
    try:
        while not stop.is_set():
            batch = [m for m in next_batch(consumer, 500, 0.2) if m.error() is None]
            if not batch:
                continue
            producer.begin_transaction()
            for msg in batch:
                producer.produce(sink, msg.value())
                producer.poll(0)
            last = batch[-1]
            producer.send_offsets_to_transaction(
                [TopicPartition(source, 0, (last.offset() or 0) + 1)],
                consumer.consumer_group_metadata(),
                settings.client_timeout_s,
            )
            producer.commit_transaction(settings.client_timeout_s * 2)
    finally:
        consumer.close()


# -- the benchmark -------------------------------------------------------------------
@dataclass
class RoeResult(BenchResult):
    """A BenchResult with latency percentiles and a latency goal."""

    latency_ms: dict[str, Any] = field(default_factory=dict)
    latency_goal: dict[str, Any] | None = None

    def to_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        doc = super().to_json(machine)
        doc["latency_ms"] = self.latency_ms
        if self.status == "ok" and self.latency_goal is not None:
            doc["goals"].append(self.latency_goal)
            doc["goal_met"] = all(g["met"] for g in doc["goals"])
        return doc


def bench_roe(
    settings: Settings, repeats: int, runs: int = 200, paced_runs: int = 80, pings: int = 200
) -> BenchResult:
    spec = feature_workflow()
    stages = [s.name for s in spec.stages]
    apply_topics(settings, default_catalog())
    print("  baselines: broker hop, transactional relay hop…", flush=True)
    broker_hop = hop_baseline(settings, pings, relay=False)
    relay_hop = hop_baseline(settings, pings, relay=True)
    # Tansu holds a fetch for the whole fetch.wait.max.ms: shown by the same hop at 1 ms.
    fast_hop = hop_baseline(settings, pings // 2, relay=False, fetch_wait_ms=1)

    agents = Agents(settings, [s.agent for s in spec.stages])
    agents.start()
    if not agents.ready.wait(30) or agents.error is not None:
        raise RuntimeError(f"agents did not start: {agents.error!r}")
    tail = Tail(settings)
    starter = Starter(settings, spec)
    log_path = settings.data_dir.parent / "roe-engine.log"
    path = PathResult(
        "roe_workflows",
        f"{runs} START commands at once to the engine subprocess; until every "
        "WORKFLOW_SUCCEEDED is read from bar.roe.events; 4 stages each, agents answer at once "
        "(records/s = workflows/s)",
    )
    under_load: dict[str, list[float]] = {}
    try:
        with engine_process(settings, log_path) as proc:
            tag = uuid.uuid4().hex[:6]
            warm = [f"bench-{tag}-warm"]
            starter.start(warm)
            tail.wait(warm, 60)  # the engine's start-up: rebuild, init_transactions
            print(f"  engine up (pid {proc.pid}); {paced_runs} runs one at a time…", flush=True)
            paced = [f"bench-{tag}-p{i}" for i in range(paced_runs)]
            for run_id in paced:
                starter.start([run_id])
                tail.wait([run_id], 30)
            paced_hops = hops(paced, stages, agents, starter, tail)
            print(f"  hop {summarize(paced_hops['hop'])}", flush=True)
            for rep in range(repeats):
                batch = [f"bench-{tag}-r{rep}-{i}" for i in range(runs)]
                began = now_ms()
                starter.start(batch)
                ended = tail.wait(batch, 120)
                run = Run((ended - began) / 1000.0, runs)
                path.runs.append(run)
                for key, values in hops(batch, stages, agents, starter, tail).items():
                    under_load.setdefault(key, []).extend(values)
                print(
                    f"  run {rep + 1}/{repeats}: {runs} workflows in {run.seconds:.2f}s = "
                    f"{run.records_per_s:,.1f}/s",
                    flush=True,
                )
            if proc.poll() is not None:
                raise RuntimeError(f"engine exited {proc.returncode}: see {log_path}")
        if agents.error is not None:
            raise agents.error
    finally:
        agents.halt()
        tail.close()
    ok = WorkflowEventKind.WORKFLOW_SUCCEEDED
    failed = [r for r, kind in tail.done.items() if kind is not ok]
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) did not succeed, e.g. {failed[0]}")

    paced_summary = {k: summarize(v) for k, v in paced_hops.items()}
    broker = summarize(broker_hop)
    relay = summarize(relay_hop)
    p99 = paced_summary["hop"]["p99"]

    def vs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        return {q: round(a[q] / b[q], 2) if b[q] else 0.0 for q in ("p50", "p99")}

    timestamp_types = sorted(agents.timestamp_types)
    return RoeResult(
        name="roe",
        title="ROE engine: 4-stage workflows/s and result-to-next-task hop latency",
        parameters={
            "workflow": spec.workflow_id,
            "stages": stages,
            "runs_at_once": runs,
            "paced_runs": paced_runs,
            "repeats": repeats,
            "baseline_pings": pings,
            "engine": "subprocess python -m streams.roe (tick 0.2 s, batch ≤ 500, "
            "fetch.wait.max.ms 20, linger.ms 1, one transaction per batch)",
            "agents": "one thread in the bench process: next_batch(500, 0.05), TypedProducer "
            "(PRODUCER_DEFAULTS), flush after each batch; consumer fetch.wait.max.ms 10",
            "clock": "one machine wall clock; task timestamps are record CreateTime set by "
            "the engine's producer"
            + (" (confirmed)" if timestamp_types == [TIMESTAMP_CREATE_TIME] else "")
            + "; result times are the agent's time.time() just before produce",
        },
        paths={"roe_workflows": path},
        goal_text=f"hop p99 < {GOAL_P99_MS:.0f} ms (result sent -> next stage's task record), "
        "runs one at a time",
        latency_ms={
            "paced": paced_summary,
            "under_load": {k: summarize(v) for k, v in under_load.items()},
            "baselines": {
                "broker_hop": broker,
                "txn_relay_hop": relay,
                "broker_hop_fetch_wait_1ms": summarize(fast_hop),
            },
            "ratios": {
                "hop/broker_hop": vs(paced_summary["hop"], broker),
                "visible_hop/txn_relay_hop": vs(paced_summary["visible_hop"], relay),
            },
        },
        latency_goal={
            "subject": f"budget {GOAL_P99_MS:.0f} ms",
            "baseline": "roe hop p99",
            "target_ratio": 1.0,
            "actual_ratio": round(GOAL_P99_MS / p99, 3) if p99 > 0 else 0.0,
            "met": p99 < GOAL_P99_MS,
            "p99_ms": p99,
        },
        notes=[
            "hop = the engine's own work between a result and the next task: consume "
            "(fetch.wait.max.ms 20, read_committed), decide, produce; its transaction commit "
            "and the agent's fetch are in visible_hop, which txn_relay_hop bounds from below.",
            "broker_hop at fetch.wait.max.ms 20 vs 1 shows Tansu answering a fetch only when "
            "fetch.wait.max.ms expires, even with data waiting: each consume hop (engine, agents) "
            "pays up to that wait here (a Kafka broker answers once fetch.min.bytes is there).",
            "under_load: all runs start at once, the engine takes up to 500 inputs per batch "
            "and decides/produces them one by one in Python (~0.3-0.6 ms per input, profiled: "
            "_send ~45%, decide/evolve ~35%, commit ~2 ms per batch), so a hop includes waiting "
            "behind the rest of its batch; the goal is evaluated on runs one at a time.",
            "The latency goal is shown in the goals table as 'budget 50 ms ≥ 1.0x roe hop p99' "
            "(actual = 50 / p99).",
        ],
    )

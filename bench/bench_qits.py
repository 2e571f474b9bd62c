"""(g) QITS: the demo's Feature Development Workflow per stage, and mutation testing
through the agent against the engine directly.

**Workflow.** The Feature Development Workflow of ``make demo`` (ROE engine in a thread
of this process, the four QITS agents served in-process by :func:`serving`, as
:func:`streams.roe.demo.run_roe_demo` runs them) on ``streams/roe/specs/petstore.yaml``,
the agents' built-in manifests (quality gate: 30 mutants, 2 workers). A run is started
with a ``START`` command on ``bar.roe.commands`` whose workflow input ``spec`` is the
document's text (what an issue delivery's fenced block becomes); the webhook is left
out (``bench_webhook`` measures it).

* ``workflow`` (subject): START sent → WORKFLOW_SUCCEEDED read from ``bar.roe.events``;
  per stage STAGE_DISPATCHED ``at`` → STAGE_SUCCEEDED ``at`` (engine timestamps: task
  delivery, the agent's work, result delivery and the engine's decision).
* ``direct_agents`` (baseline): the same four agents, fresh instances, run in sequence
  in this process through :class:`AgentTestContext` (the runtime's ``run_task``, the
  same parameters the engine sends), each stage's outputs handed to the next: no
  Kafka, no ROE. ``workflow / direct_agents`` seconds is the orchestration overhead.

**Mutation.** The same mutants of the same build, two ways: ``app.py`` of the first
``direct_agents`` run with its generated HTTP tests, :data:`MUTATION_MUTANTS` mutants
sampled evenly from ``app.py``'s plan (:func:`qits.mutation.sample_evenly`: the same
ones on both paths), 2 workers, each mutant one pytest subprocess on a working copy
whose app is served by the agent's plugin (:data:`agents.qits.mutants.PLUGIN`):

* ``mutation_agent`` (subject): a task to the served quality-gate-enforcer over Kafka
  (policy ``max_mutants`` = that count, notes off): task sent → result received.
  Includes what the agent does besides mutation (tests under coverage, security scan,
  lint); the mutation part alone is the gate report's ``mutation.duration_s`` (in
  ``overhead``).
* ``mutation_engine`` (baseline): :func:`qits.mutation.run_mutation_test` called
  directly with the arguments the agent's adapter (:func:`agents.qits.mutants.
  run_http_mutation`) gives it: ``files=["app.py"]``, ``max_mutants``, the plugin
  written by ``prepare_copy`` and loaded with ``-p``, the built API's credentials.

``records`` of the mutation paths are mutants (records/s = mutants/s; µs/record is the
time per mutant). The summary table compares every path with both baselines; the
meaningful pairs are ``workflow/direct_agents`` and ``mutation_*/mutation_engine`` —
the ``overhead`` section of the JSON has them as seconds ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from bench.report import BenchResult, PathResult, Run
from buildkit.contracts.events import AgentResult, AgentTask, TaskStatus
from buildkit.contracts.roe import WorkflowCommand, WorkflowCommandKind, WorkflowEvent
from buildkit.contracts.roe import WorkflowEventKind as K
from buildkit.settings import Settings

SPEC = Path(__file__).parent.parent / "streams" / "roe" / "specs" / "petstore.yaml"
FEATURE = "feature-workflow.yml"
COMMANDS = "bar.roe.commands"
EVENTS = "bar.roe.events"
RESULTS = "bar.tasks.results"
#: Mutants per run in the mutation comparison (all of app.py's when it has fewer).
MUTATION_MUTANTS = 12
WORKERS = 2
TERMINAL = {K.WORKFLOW_SUCCEEDED, K.WORKFLOW_FAILED, K.WORKFLOW_CANCELLED}


def _assign_from_end(consumer: Consumer, settings: Settings, topic: str) -> None:
    from confluent_kafka import TopicPartition

    md = consumer.list_topics(topic, timeout=settings.client_timeout_s)
    consumer.assign(
        [
            TopicPartition(
                topic,
                p,
                consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=settings.client_timeout_s
                )[1],
            )
            for p in sorted(md.topics[topic].partitions)
        ]
    )


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer(
        settings.kafka_config(
            **{
                "group.id": f"{group}-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
                "log_level": 0,
            }
        )
    )


# -- the workflow through ROE ----------------------------------------------------------
@dataclass
class Timed:
    """One run of the workflow (either path): total seconds, seconds per stage, outcome."""

    seconds: float
    stages: dict[str, float]
    ok: bool
    detail: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class EventTail:
    """Every event of the runs started here, read from ``bar.roe.events``."""

    def __init__(self, settings: Settings) -> None:
        from buildkit.catalog import default_catalog
        from buildkit.serde import SerdeRegistry

        self.serde = SerdeRegistry(settings, default_catalog()).for_topic(EVENTS)
        self.consumer = _consumer(settings, "bench-qits-tail")
        _assign_from_end(self.consumer, settings, EVENTS)
        self.events: dict[str, list[WorkflowEvent]] = {}

    def wait(
        self, run_id: str, timeout: float, alive: Callable[[], bool]
    ) -> tuple[float, list[WorkflowEvent]]:
        """Read until ``run_id`` ended: (wall time it was seen, its events); stops early
        when ``alive()`` (the engine thread) says no."""
        from buildkit.kafka import next_batch

        deadline = time.monotonic() + timeout
        while True:
            events = self.events.get(run_id, [])
            if any(e.kind in TERMINAL for e in events):
                return time.perf_counter(), events
            if time.monotonic() > deadline:
                raise TimeoutError(f"workflow run {run_id} did not end in {timeout:.0f}s")
            if not alive():
                raise RuntimeError("the ROE engine thread stopped (see the log above)")
            for msg in next_batch(self.consumer, 1000, 0.05):
                if msg.error() is None:
                    ev = self.serde.decode(msg.value())
                    if isinstance(ev, WorkflowEvent):
                        self.events.setdefault(ev.run_id, []).append(ev)

    def close(self) -> None:
        self.consumer.close()


def run_workflow(
    producer: Any, tail: EventTail, spec: Any, text: str, alive: Callable[[], bool]
) -> Timed:
    """START one run of the feature workflow; until its terminal event was read."""
    run_id = f"bench-qits-{uuid.uuid4().hex[:10]}"
    command = WorkflowCommand(
        command_id=f"cmd-{run_id}",
        run_id=run_id,
        kind=WorkflowCommandKind.START,
        workflow_id=spec.workflow_id,
        spec_json=spec.model_dump_json(),
        inputs={"spec": text},
        requested_at=datetime.now(UTC),
    )
    t0 = time.perf_counter()
    producer.produce(COMMANDS, command, key=run_id)
    producer.flush()
    seen, events = tail.wait(run_id, 600, alive)
    dispatched: dict[str, datetime] = {}
    stages: dict[str, float] = {}
    metrics: dict[str, float] = {}
    for ev in events:
        if ev.kind is K.STAGE_DISPATCHED and ev.stage:
            dispatched[ev.stage] = ev.at
        elif ev.kind is K.STAGE_SUCCEEDED and ev.stage and ev.stage in dispatched:
            stages[ev.stage] = (ev.at - dispatched[ev.stage]).total_seconds()
            metrics.update({f"{ev.stage}.{k}": v for k, v in ev.metrics.items()})
    end = next(e for e in events if e.kind in TERMINAL)
    started = next((e for e in events if e.kind is K.WORKFLOW_STARTED), None)
    if started is not None:
        stages["engine: WORKFLOW_STARTED → end"] = (end.at - started.at).total_seconds()
    reasons = "; ".join(f"{e.stage}: {e.reason}" for e in events if e.reason and e.stage)
    return Timed(seen - t0, stages, end.kind is K.WORKFLOW_SUCCEEDED, reasons, metrics=metrics)


def run_direct(agents: list[Any], spec: Any, text: str) -> Timed:
    """The four stages in sequence through AgentTestContext, outputs handed on."""
    from agents.runtime.testing import AgentTestContext

    by_name = {a.name: a for a in agents}
    run_id = f"bench-qits-direct-{uuid.uuid4().hex[:10]}"

    async def go() -> Timed:
        artifacts: dict[str, str] = {}
        stages: dict[str, float] = {}
        metrics: dict[str, float] = {}
        t0 = time.perf_counter()
        for stage in spec.stages:
            ctx = AgentTestContext(by_name[stage.agent])
            params = {
                "run_id": run_id,
                "workflow_id": spec.workflow_id,
                "stage": stage.name,
                "workflow_inputs": {"spec": text},
                "outputs": list(stage.outputs),
            }
            s0 = time.perf_counter()
            result = await ctx.run(
                run_id=run_id,
                stage=stage.name,
                inputs={k: v for k, v in artifacts.items() if k in stage.inputs},
                parameters_json=json.dumps(params, sort_keys=True, separators=(",", ":")),
            )
            stages[stage.name] = time.perf_counter() - s0
            metrics.update({f"{stage.name}.{k}": v for k, v in result.metrics.items()})
            if result.status is not TaskStatus.SUCCEEDED:
                error = result.error.message[:300] if result.error else result.status.value
                return Timed(time.perf_counter() - t0, stages, False, f"{stage.name}: {error}")
            artifacts.update(result.outputs)
        return Timed(time.perf_counter() - t0, stages, True, outputs=artifacts, metrics=metrics)

    return asyncio.run(go())


# -- mutation: the agent and the engine --------------------------------------------------
def mutation_engine(src: Path, tests: Path, n: int) -> tuple[float, Any]:
    """qits.mutation.run_mutation_test called directly with what the agent's adapter
    passes it: app.py only, ``n`` mutants sampled evenly, the serve plugin written into
    each working copy and loaded with ``-p``, the built API's credentials."""
    from agents.qits.mutants import PLUGIN, PLUGIN_MODULE
    from agents.qits.serving import BUILT_API_CREDENTIALS
    from qits.mutation import WorkingCopy, run_mutation_test

    def write_plugin(copy: WorkingCopy) -> None:
        (copy.root / f"{PLUGIN_MODULE}.py").write_text(PLUGIN, encoding="utf-8")

    credentials = {k: os.environ.get(k, v) for k, v in BUILT_API_CREDENTIALS.items()}
    t0 = time.perf_counter()
    report = run_mutation_test(
        src,
        tests,
        files=["app.py"],
        max_mutants=n,
        workers=WORKERS,
        pytest_args=["-p", PLUGIN_MODULE],
        extra_env={**credentials, "BAR_QITS_BASE_URL": None},
        prepare_copy=write_plugin,
        baseline_timeout_s=300,
    )
    return time.perf_counter() - t0, report


class GateClient:
    """Tasks to the served quality-gate-enforcer, results read from bar.tasks.results."""

    def __init__(self, settings: Settings, data_dir: Path) -> None:
        from buildkit.catalog import default_catalog
        from buildkit.producer import TypedProducer
        from buildkit.serde import SerdeRegistry

        self.data_dir = data_dir
        self.serde = SerdeRegistry(settings, default_catalog()).for_topic(RESULTS)
        self.consumer = _consumer(settings, "bench-qits-results")
        _assign_from_end(self.consumer, settings, RESULTS)
        self.producer = TypedProducer(settings, source="bench")

    def run(
        self, src_ref: str, tests_ref: str, n: int
    ) -> tuple[float, AgentResult, dict[str, Any]]:
        from agents.qits.quality_gate import REPORT_ARTIFACT
        from buildkit.catalog import task_topic_name
        from buildkit.kafka import next_batch

        agent = "quality-gate-enforcer"
        run_id, stage = f"bench-qits-mut-{uuid.uuid4().hex[:10]}", "mutation"
        task = AgentTask(
            task_id=f"{run_id}-task",
            agent=agent,
            run_id=run_id,
            stage=stage,
            parameters_json=json.dumps(
                {"src": src_ref, "tests": tests_ref, "policy": {"max_mutants": n, "notes": False}}
            ),
            created_at=datetime.now(UTC),
            timeout_ms=900_000,
        )
        t0 = time.perf_counter()
        self.producer.produce(task_topic_name(agent), task, key=task.task_id)
        self.producer.flush()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            for msg in next_batch(self.consumer, 100, 0.05):
                if msg.error() is not None:
                    continue
                result = self.serde.decode(msg.value())
                if isinstance(result, AgentResult) and result.task_id == task.task_id:
                    seconds = time.perf_counter() - t0
                    # Written also when the gate fails (then it is not in the outputs).
                    path = self.data_dir / "artifacts" / run_id / stage / REPORT_ARTIFACT
                    report = json.loads(path.read_text()) if path.exists() else {}
                    return seconds, result, report
        raise TimeoutError("the quality-gate-enforcer did not answer in 900s")

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()


# -- the benchmark -----------------------------------------------------------------------
@dataclass
class QitsResult(BenchResult):
    """A BenchResult with per-stage times and the overhead ratios."""

    stages: dict[str, Any] = field(default_factory=dict)
    overhead: dict[str, Any] = field(default_factory=dict)
    mutation: dict[str, Any] = field(default_factory=dict)

    def to_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        doc = super().to_json(machine)
        doc["stages_s"] = self.stages
        doc["overhead"] = self.overhead
        doc["mutation"] = self.mutation
        return doc


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def _stage_summary(timed: list[Timed]) -> dict[str, Any]:
    names = list(dict.fromkeys(k for t in timed for k in t.stages))
    return {
        "median": {n: _median([t.stages[n] for t in timed if n in t.stages]) for n in names},
        "runs": [{k: round(v, 3) for k, v in t.stages.items()} for t in timed],
        "total_median": _median([t.seconds for t in timed]),
    }


def bench_qits(
    settings: Settings, repeats: int, mutation_repeats: int | None = None
) -> BenchResult:
    from agents.qits import (
        ApiBuilderAgent,
        ApiFirstEnforcerAgent,
        QualityGateEnforcerAgent,
        TestGeneratorAgent,
    )
    from agents.qits.api_builder import SRC_ARTIFACT
    from agents.qits.artifacts import LocalArtifactStore
    from agents.qits.test_generator import TESTS_ARTIFACT
    from agents.runtime.inprocess import serving
    from buildkit.catalog import default_catalog
    from buildkit.producer import TypedProducer
    from buildkit.topics import apply_topics
    from qits.mutation import plan_mutants
    from streams.roe.engine import RoeEngine
    from streams.roe.spec import builtin_workflows, load_workflow

    apply_topics(settings, default_catalog())
    spec = load_workflow(next(p for p in builtin_workflows() if p.name == FEATURE))
    text = SPEC.read_text(encoding="utf-8")
    data_dir = settings.data_dir.absolute()

    def qits_agents() -> list[Any]:
        return [
            ApiFirstEnforcerAgent(data_dir=data_dir),
            TestGeneratorAgent(data_dir=data_dir),
            ApiBuilderAgent(data_dir=data_dir),
            QualityGateEnforcerAgent(data_dir=data_dir),
        ]

    stage_list = " → ".join(f"{s.name} ({s.agent})" for s in spec.stages)
    paths = {
        "workflow": PathResult(
            "workflow",
            f"{spec.workflow_id} through ROE (engine thread) + Kafka, the 4 QITS agents served "
            f"in-process, petstore.yaml as input spec: START sent → WORKFLOW_SUCCEEDED read "
            f"(records = workflows); stages {stage_list}",
        ),
        "direct_agents": PathResult(
            "direct_agents",
            "the same 4 agents in sequence in this process (AgentTestContext → run_task, "
            "the engine's parameters), outputs handed on: no Kafka, no ROE",
            role="baseline",
        ),
        "mutation_agent": PathResult(
            "mutation_agent",
            "task to the served quality-gate-enforcer over Kafka, max_mutants = the shared "
            "mutant count, 2 workers: send → result (records = mutants; includes the agent's "
            "coverage run, security scan and lint)",
        ),
        "mutation_engine": PathResult(
            "mutation_engine",
            "qits.mutation.run_mutation_test called directly on the same build and tests with "
            "the adapter's arguments (app.py, the same max_mutants, serve plugin, 2 workers) "
            "(records = mutants)",
            role="baseline",
        ),
    }
    timed: dict[str, list[Timed]] = {"workflow": [], "direct_agents": []}
    notes: list[str] = []
    mutation_info: dict[str, Any] = {}
    gate_mutation_s: list[float] = []
    build: Timed | None = None

    engine = RoeEngine(settings, workflows=[spec])
    stop = threading.Event()
    worker = threading.Thread(target=engine.run, args=(stop,), name="bench-roe-engine", daemon=True)
    tail = EventTail(settings)
    producer = TypedProducer(settings, source="bench")
    producer.check_topics([COMMANDS])
    direct_agents = qits_agents()
    with serving(settings, qits_agents()):
        worker.start()
        try:
            names = ["direct_agents", "workflow"]
            for rep in range(repeats):
                shift = rep % len(names)
                for name in names[shift:] + names[:shift]:
                    if name == "workflow":
                        t = run_workflow(producer, tail, spec, text, worker.is_alive)
                    else:
                        t = run_direct(direct_agents, spec, text)
                        if t.ok and build is None:
                            build = t
                    timed[name].append(t)
                    paths[name].runs.append(Run(t.seconds, 1))
                    per = ", ".join(f"{k} {v:.1f}s" for k, v in t.stages.items())
                    print(
                        f"  {name:<14} run {rep + 1}/{repeats}: {t.seconds:6.1f}s "
                        f"{'ok' if t.ok else 'FAILED ' + t.detail[:200]}  ({per})",
                        flush=True,
                    )
                    if not t.ok:
                        notes.append(f"{name} run {rep + 1} did not succeed: {t.detail[:300]}")
        finally:
            stop.set()
            worker.join(30)
            engine.close()
            tail.close()
            producer.close()

        # -- mutation: the same build, the same mutants, two ways ------------------------
        if build is None:
            raise RuntimeError("no direct_agents run succeeded: nothing built to mutate")
        store = LocalArtifactStore(data_dir / "artifacts")
        src_ref, tests_ref = build.outputs[SRC_ARTIFACT], build.outputs[TESTS_ARTIFACT]
        src, tests = store.resolve(src_ref), store.resolve(tests_ref)
        planned = len(plan_mutants(src, files=["app.py"]))
        n = min(planned, MUTATION_MUTANTS)
        mutation_info.update(
            {
                "file": "app.py of the build (api-builder output of the first direct_agents run)",
                "tests": "the generated HTTP tests of that run (test-generator output)",
                "mutants_planned": planned,
                "mutants_per_run": n,
                "same_mutants_on_both_paths": True,
                "sampling": "qits.mutation.sample_evenly over the same plan on both paths",
                "workers": WORKERS,
                "per_mutant_run": "a pytest subprocess on a working copy with the mutant, the "
                "app served by uvicorn inside it (agents.qits.mutants.PLUGIN)",
            }
        )
        client = GateClient(settings, data_dir)
        reports: dict[str, Any] = {}
        skip = {"survivors", "errored"}
        try:
            mnames = ["mutation_engine", "mutation_agent"]
            mreps = mutation_repeats or repeats
            for rep in range(mreps):
                shift = rep % len(mnames)
                for name in mnames[shift:] + mnames[:shift]:
                    if name == "mutation_engine":
                        seconds, report = mutation_engine(src, tests, n)
                        tried = report.total
                        summary = report.summary
                        reports[name] = report.model_dump(mode="json", exclude=skip)
                    else:
                        seconds, result, gate = client.run(src_ref, tests_ref, n)
                        mut = gate.get("mutation") or {}
                        tried = int(mut.get("total") or 0)
                        if mut.get("duration_s") is not None:
                            gate_mutation_s.append(float(mut["duration_s"]))
                        summary = (
                            f"gate {result.status.value}, mutation {mut.get('status')} "
                            f"score {mut.get('score')} of {tried}"
                        )
                        reports[name] = {
                            "status": result.status.value,
                            "error": result.error.message[:300] if result.error else None,
                            "mutation": {k: v for k, v in mut.items() if k not in skip},
                            "metrics": dict(result.metrics),
                        }
                    paths[name].runs.append(Run(seconds, max(tried, 1)))
                    print(
                        f"  {name:<16} run {rep + 1}/{mreps}: {seconds:6.1f}s "
                        f"{seconds / max(tried, 1):5.2f} s/mutant  {summary}",
                        flush=True,
                    )
        finally:
            client.close()

    def med_s(name: str) -> float:
        return _median([r.seconds for r in paths[name].runs])

    def per_mutant(name: str) -> float:
        return _median([r.seconds / r.records for r in paths[name].runs])

    wf, direct = timed["workflow"], timed["direct_agents"]
    stage_names = [s.name for s in spec.stages]
    wf_stages = _stage_summary(wf)
    direct_stages = _stage_summary(direct)
    engine_s = per_mutant("mutation_engine")
    overhead = {
        "workflow_over_direct_s": round(med_s("workflow") / med_s("direct_agents"), 3)
        if med_s("direct_agents")
        else None,
        "workflow_minus_direct_s": round(med_s("workflow") - med_s("direct_agents"), 3),
        "per_stage_workflow_over_direct": {
            n: round(wf_stages["median"][n] / direct_stages["median"][n], 3)
            for n in stage_names
            if wf_stages["median"].get(n) and direct_stages["median"].get(n)
        },
        "s_per_mutant": {
            "mutation_agent": round(per_mutant("mutation_agent"), 3),
            "mutation_agent_mutation_part": round(_median(gate_mutation_s) / n, 3)
            if gate_mutation_s and n
            else None,
            "mutation_engine": round(engine_s, 3),
        },
        "mutation_agent_over_engine": round(per_mutant("mutation_agent") / engine_s, 3)
        if engine_s
        else None,
        "mutation_agent_mutation_part_over_engine": round(
            _median(gate_mutation_s) / n / engine_s, 3
        )
        if gate_mutation_s and n and engine_s
        else None,
        "how": "seconds ratios of medians (>1: slower than the baseline); per mutant for the "
        "mutation paths. mutation_agent = the whole gate task (coverage + mutation + security "
        "+ lint) over Kafka; its mutation part = the gate report's mutation.duration_s.",
    }
    mutation_info["last_reports"] = reports
    notes += [
        "workflow and direct_agents run the same agent code on the same spec with the agents' "
        "built-in policies (quality gate: 30 sampled mutants, 2 workers); the difference is "
        "Kafka + ROE (task and result delivery, the engine's transactions) plus the runners' "
        "scheduling in threads of this process.",
        "Stage times of workflow are engine timestamps (STAGE_DISPATCHED at → STAGE_SUCCEEDED "
        "at); those of direct_agents are each AgentTestContext.run.",
        "Most of each stage is subprocess work (pytest runs, uvicorn servers, scanners) that "
        "the orchestration does not change; absolute times move with the machine's load, the "
        "ratios of the same run are what to compare.",
        "The summary table compares each path with both baselines; only workflow/direct_agents "
        "and mutation_agent/mutation_engine are meaningful pairs (see overhead).",
    ]
    return QitsResult(
        name="qits",
        title="QITS: the Feature Development Workflow per stage (ROE + Kafka vs the agents "
        "directly) and mutation testing through the agent vs the engine",
        parameters={
            "repeats": repeats,
            "mutation_repeats": mutation_repeats or repeats,
            "spec": "streams/roe/specs/petstore.yaml",
            "workflow": spec.workflow_id,
            "stages": [f"{s.name}: {s.agent}" for s in spec.stages],
            "engine": "streams.roe.engine.RoeEngine in a thread of the bench process",
            "agents": "agents.runtime.inprocess.serving (one AgentRunner thread each)",
            "start": "WorkflowCommand START on bar.roe.commands, inputs {spec: <petstore.yaml>}",
            "mutation_mutants": MUTATION_MUTANTS,
        },
        paths=paths,
        notes=notes,
        stages={"workflow": wf_stages, "direct_agents": direct_stages},
        overhead=overhead,
        mutation=mutation_info,
    )

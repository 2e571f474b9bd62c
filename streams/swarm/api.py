"""The SWARM API of the architecture document, in Python::

    with Swarm(settings) as swarm:                      # local processes by default
        swarm.spawn_agent("agents/manifests/test-generator.yaml",
                          entrypoint="my_agents.tg:TestGenerator")
        swarm.configure_scaling("test-generator", {"minReplicas": 2, "maxReplicas": 20,
                                                   "tasksPerAgent": 5})
        swarm.set_load_balancing({"strategy": "least-loaded"})
        ids = swarm.create_tasks("test-generator", [{"file": "src/api/users.ts"}, ...],
                                 scaling={"minAgents": 2, "maxAgents": 20, "tasksPerAgent": 5})
        swarm.wait_for_results(ids)
        swarm.get_metrics("test-generator", "1h")

``Swarm`` owns a :class:`~streams.swarm.controller.SwarmController` stepping in a
background thread and the backend it drives. It is for one process that both
submits work and runs the agents (scripts, the demo, tests); a long-lived
deployment runs ``buildkit swarm run`` and talks to it with ``buildkit agents
deploy`` / ``buildkit swarm scale`` instead.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError

from agents.runtime.manifest import load_manifest
from buildkit.catalog import Catalog, default_catalog, task_spec
from buildkit.contracts.events import AgentResult, AgentTask
from buildkit.errors import BuildKitError
from buildkit.kafka import tail_consumer
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from streams.swarm.backend import ScalingBackend
from streams.swarm.balancing import LoadBalancing, TaskDispatcher
from streams.swarm.controller import HealthSettings, SwarmController, ensure_swarm_topics
from streams.swarm.policy import ScalingPolicy
from streams.swarm.views import AgentMetrics, agent_metrics

__all__ = ["ResultWatcher", "Swarm"]

RESULTS_TOPIC = "bar.tasks.results"


class ResultWatcher:
    """Follows ``bar.tasks.results`` from the moment it is created, collecting the
    results of the task ids it is asked about (every attempt, duplicates included)."""

    def __init__(self, settings: Settings) -> None:
        self._serde = SerdeRegistry(settings, default_catalog()).for_topic(RESULTS_TOPIC)
        # ListOffsets may lie low (DESIGN.md): start a little back, filter by id.
        self._consumer = tail_consumer(settings, RESULTS_TOPIC, 1000, name="bar-swarm-results")
        self.results: dict[str, list[AgentResult]] = {}

    def poll(self, timeout_s: float = 0.1) -> int:
        """Read what arrived; the number of results read."""
        got = 0
        for msg in self._consumer.consume(1000, timeout=timeout_s):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise BuildKitError(f"{RESULTS_TOPIC}: {err.str()}")
                continue
            result = self._serde.decode(msg.value())
            if isinstance(result, AgentResult):
                self.results.setdefault(result.task_id, []).append(result)
                got += 1
        return got

    def done(self, task_ids: Iterable[str]) -> set[str]:
        return {t for t in task_ids if t in self.results}

    def close(self) -> None:
        self._consumer.close()


class Swarm:
    """``configureScaling``, ``spawnAgent``, ``setLoadBalancing``, ``createTasks``,
    ``getMetrics``; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        backend: ScalingBackend | None = None,
        *,
        interval_s: float = 1.0,
        health: HealthSettings | None = None,
        heartbeat_interval_s: float = 1.0,
        log_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.balancing = LoadBalancing()
        self.health = health or HealthSettings(
            health_check_interval_s=self.balancing.health_check_interval_ms / 1000,
            failure_threshold=self.balancing.failure_threshold,
        )
        if backend is None:
            from streams.swarm.local import LocalBackend

            backend = LocalBackend(
                heartbeat_interval_s=heartbeat_interval_s,
                log_dir=log_dir or settings.data_dir / "logs" / "replicas",
            )
        self.backend = backend
        ensure_swarm_topics(settings)
        self.controller = SwarmController(
            settings, backend, interval_s=interval_s, health=self.health, follow_commands=False
        )
        if hasattr(backend, "report"):
            backend.report = self.controller.report_replica
        self._dispatchers: dict[str, TaskDispatcher] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="swarm", daemon=True)
        self._results: ResultWatcher | None = None
        self.error: BaseException | None = None
        self._thread.start()

    def _loop(self) -> None:
        try:
            self.controller.run(self._stop)
        except BaseException as exc:  # surfaced by poll_results / wait_for_results
            self.error = exc

    # -- the document's calls ----------------------------------------------------
    def spawn_agent(
        self,
        manifest_path: str | Path,
        *,
        entrypoint: str | None = None,
        name: str | None = None,
        replicas: int | None = None,
        scaling: ScalingPolicy | Mapping[str, Any] | None = None,
    ) -> str:
        """Deploy the agent of ``manifest_path`` (its task topic created if missing);
        its agent type (``name`` or the manifest's)."""
        path = Path(manifest_path)
        manifest = load_manifest(path)
        agent_type = name or manifest.name
        apply_topics(self.settings, Catalog([task_spec(agent_type)]))
        policy = self._policy(scaling) if scaling is not None else None
        self.controller.manage(
            manifest,
            policy,
            replicas=replicas,
            manifest_path=path,
            entrypoint=entrypoint,
            name=name,
        )
        return agent_type

    def configure_scaling(
        self, agent_type: str, scaling: ScalingPolicy | Mapping[str, Any]
    ) -> None:
        """Replace ``agent_type``'s scaling policy (cooldown history kept)."""
        self.controller.set_policy(agent_type, self._policy(scaling))

    def set_load_balancing(self, balancing: LoadBalancing | Mapping[str, Any]) -> None:
        """Strategy for :meth:`create_tasks` and the health thresholds of the controller."""
        self.balancing = (
            balancing
            if isinstance(balancing, LoadBalancing)
            else LoadBalancing.model_validate(balancing)
        )
        self.controller.health = HealthSettings(
            health_check_interval_s=self.balancing.health_check_interval_ms / 1000,
            failure_threshold=self.balancing.failure_threshold,
            startup_grace_s=self.controller.health.startup_grace_s,
        )
        for dispatcher in self._dispatchers.values():
            dispatcher.close()
        self._dispatchers.clear()

    def create_tasks(
        self,
        agent_type: str,
        tasks: Iterable[Mapping[str, Any]],
        *,
        scaling: ScalingPolicy | Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> list[str]:
        """Send one task per mapping (its parameters) to ``agent_type``; their task ids.
        ``scaling`` reconfigures the agent's policy first (the document's
        ``createTasks({tasks, scaling})``); ``key`` names a parameter to key tasks by
        (default: the task id)."""
        if scaling is not None:
            self.configure_scaling(agent_type, scaling)
        if self._results is None:
            self._results = ResultWatcher(self.settings)
        dispatcher = self._dispatchers.get(agent_type)
        if dispatcher is None:
            dispatcher = TaskDispatcher(
                self.settings, agent_type, self.balancing, source="bar-swarm"
            )
            self._dispatchers[agent_type] = dispatcher
        batch = uuid.uuid4().hex[:8]
        now = datetime.now(UTC)
        ids = []
        for n, parameters in enumerate(tasks):
            task_id = f"{agent_type}-{batch}-{n:05d}"
            task = AgentTask(
                task_id=task_id,
                agent=agent_type,
                parameters_json=json.dumps(dict(parameters), sort_keys=True),
                created_at=now,
            )
            dispatcher.dispatch(task, key=str(parameters[key]) if key else None)
            ids.append(task_id)
        dispatcher.flush()
        return ids

    def poll_results(
        self, task_ids: Iterable[str], timeout_s: float = 0.2
    ) -> dict[str, list[AgentResult]]:
        """Read results arriving within ``timeout_s``; every result seen so far for each
        of ``task_ids`` that has one (duplicates included: each attempt is a record)."""
        self._raise_if_failed()
        if self._results is None:
            self._results = ResultWatcher(self.settings)
        self._results.poll(timeout_s)
        seen = self._results.results
        return {t: seen[t] for t in task_ids if t in seen}

    def wait_for_results(
        self, task_ids: Iterable[str], timeout_s: float = 300.0
    ) -> dict[str, list[AgentResult]]:
        """Block until every task in ``task_ids`` has a result; every result seen per id."""
        wanted = list(task_ids)
        deadline = time.monotonic() + timeout_s
        while True:
            done = self.poll_results(wanted)
            if len(done) == len(wanted):
                return done
            if time.monotonic() > deadline:
                raise BuildKitError(
                    f"{len(wanted) - len(done)} of {len(wanted)} task(s) have no result "
                    f"after {timeout_s:g}s"
                )

    def get_metrics(self, agent_type: str, period: str = "1h") -> AgentMetrics:
        """``swarm.getMetrics({agentType, period})`` from the event log."""
        return agent_metrics(self.settings, [agent_type], period)[0]

    def replicas(self, agent_type: str) -> int:
        return self.backend.replicas(agent_type)

    # -- lifetime --------------------------------------------------------------------
    def _policy(self, scaling: ScalingPolicy | Mapping[str, Any]) -> ScalingPolicy:
        if isinstance(scaling, ScalingPolicy):
            return scaling
        return ScalingPolicy.model_validate(dict(scaling))

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise BuildKitError(f"the SWARM controller stopped: {self.error}") from self.error

    def close(self) -> None:
        """Stop the controller, every replica and the dispatchers."""
        self._stop.set()
        self._thread.join(30)
        try:
            for dispatcher in self._dispatchers.values():
                dispatcher.close()
            if self._results is not None:
                self._results.close()
        finally:
            self.backend.close()
            self.controller.close()

    def __enter__(self) -> Swarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The SWARM controller: measure, decide, apply, check health — once per ``interval_s``.

For every managed agent type, each step

1. **measures**: the consumer group's lag on the agent's task topic (committed
   offsets from the group coordinator against *exact* end offsets, see
   :mod:`buildkit.offsets` — the embedded broker's ListOffsets undercounts), and each
   live replica's CPU and memory from its latest heartbeat on ``bar.agents.heartbeats``
   as percent of the manifest's request (HPA's ``Utilization``; CPU of a replica is
   ignored for its first ``cpu_initialization_s``, as HPA's CPU initialization
   period: start-up work is not load);
2. **decides** with :func:`streams.swarm.policy.decide_scale` (formula, cooldowns and
   stabilization documented there) and publishes the decision on
   ``bar.swarm.decisions`` — every change, and a hold whenever its outcome or its
   recommendation differs from the last one published (or ``hold_report_s`` passed),
   so the log says why SWARM is waiting without one event per tick;
3. **applies** it through the backend (:mod:`.local` processes or :mod:`.kubernetes`);
4. **checks health**: a replica whose last heartbeat is older than
   ``failure_threshold x health_check_interval_s`` (``swarm.setLoadBalancing``'s
   ``failureThreshold`` and ``healthCheckInterval``), or that never sent one within
   ``startup_grace_s`` of starting, is reported ``UNHEALTHY`` on
   ``bar.swarm.replicas`` and replaced.

Operators talk to it through ``bar.swarm.commands`` (``buildkit agents deploy``,
``buildkit swarm scale``): the controller folds that topic from its start when it
starts, so what is deployed survives a controller restart, then follows it. A manual
``scale`` sets the replica count now and counts as a change for the cooldowns; the
autoscaler carries on from there, within ``[minReplicas, maxReplicas]`` — as a
Deployment scaled by hand under an HPA.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from agents.runtime.manifest import AgentManifest, load_manifest
from buildkit.catalog import default_catalog
from buildkit.contracts.events import AgentHeartbeat, ReplicaState
from buildkit.contracts.swarm import (
    ReplicaEvent,
    ReplicaEventKind,
    SwarmCommand,
    SwarmCommandKind,
)
from buildkit.errors import BuildKitError
from buildkit.kafka import admin_client, require_topics, tail_consumer
from buildkit.offsets import EndOffsets, group_lag
from buildkit.producer import TypedProducer
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from streams.swarm.backend import ScalingBackend
from streams.swarm.events import decision_event
from streams.swarm.policy import (
    Observation,
    ScalingDecision,
    ScalingHistory,
    ScalingPolicy,
    decide_scale,
)

__all__ = [
    "COMMANDS_TOPIC",
    "DECISIONS_TOPIC",
    "REPLICAS_TOPIC",
    "HealthSettings",
    "SwarmController",
    "default_policy",
    "ensure_swarm_topics",
]

log = logging.getLogger(__name__)

DECISIONS_TOPIC = "bar.swarm.decisions"
REPLICAS_TOPIC = "bar.swarm.replicas"
COMMANDS_TOPIC = "bar.swarm.commands"
HEARTBEATS_TOPIC = "bar.agents.heartbeats"


def ensure_swarm_topics(settings: Settings) -> None:
    """Create (through the catalog, as every service does) the topics the controller and
    its replicas need: a replica started on an empty broker would otherwise crash-loop
    until someone ran ``buildkit topics apply``."""
    from buildkit.catalog import Catalog
    from buildkit.topics import apply_topics

    needed = {
        COMMANDS_TOPIC,
        DECISIONS_TOPIC,
        REPLICAS_TOPIC,
        HEARTBEATS_TOPIC,
        "bar.tasks.results",
        "bar.agents.registry",
    }
    apply_topics(settings, Catalog([s for s in default_catalog() if s.name in needed]))


def default_policy(replicas: int | None = None) -> ScalingPolicy:
    """The architecture document's ``configureScaling`` numbers plus 5 tasks per
    replica; ``replicas`` (a deploy's count) becomes the floor."""
    floor = 1 if replicas is None else replicas
    return ScalingPolicy(
        min_replicas=floor,
        max_replicas=max(10, floor),
        target_cpu=70,
        target_memory=80,
        tasks_per_agent=5,
        scale_up_cooldown_s=60,
        scale_down_cooldown_s=300,
    )


@dataclass(frozen=True)
class HealthSettings:
    """``swarm.setLoadBalancing``'s health part: heartbeats expected every
    ``health_check_interval_s``; ``failure_threshold`` missed ones make a replica unhealthy."""

    health_check_interval_s: float = 10.0
    failure_threshold: int = 3
    startup_grace_s: float = 30.0

    @property
    def deadline_s(self) -> float:
        return self.health_check_interval_s * self.failure_threshold


@dataclass
class _Managed:
    manifest: AgentManifest
    policy: ScalingPolicy
    history: ScalingHistory
    ends: EndOffsets
    last_published: tuple[str, int, int] | None = None
    last_published_at: float = 0.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Heartbeats:
    """The latest heartbeat of every replica, read by assignment from ``bar.agents.heartbeats``."""

    def __init__(self, settings: Settings, serdes: SerdeRegistry) -> None:
        self._serde = serdes.for_topic(HEARTBEATS_TOPIC)
        # Start a little back (heartbeats are small): replicas that were beating
        # before the controller started are known at once.
        self._consumer = tail_consumer(
            settings, HEARTBEATS_TOPIC, 2000, name="bar-swarm-heartbeats"
        )
        self.latest: dict[str, AgentHeartbeat] = {}
        #: When each replica's first heartbeat was read (monotonic seconds).
        self.first_seen: dict[str, float] = {}

    def poll(self) -> None:
        while True:
            batch = self._consumer.consume(500, timeout=0.02)
            if not batch:
                return
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("heartbeats: %s", err.str())
                    continue
                try:
                    beat = self._serde.decode(msg.value())
                except Exception:
                    log.warning("heartbeats: undecodable record at offset %s", msg.offset())
                    continue
                if isinstance(beat, AgentHeartbeat):
                    self.first_seen.setdefault(beat.replica_id, time.monotonic())
                    known = self.latest.get(beat.replica_id)
                    if known is None or known.sent_at <= beat.sent_at:
                        self.latest[beat.replica_id] = beat

    def of(self, agent_type: str) -> dict[str, AgentHeartbeat]:
        return {r: b for r, b in self.latest.items() if b.agent == agent_type}

    def close(self) -> None:
        self._consumer.close()


class SwarmController:
    """Scales and heals the agent types it manages; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        backend: ScalingBackend,
        *,
        interval_s: float = 1.0,
        health: HealthSettings | None = None,
        hold_report_s: float = 30.0,
        follow_commands: bool = True,
        cpu_initialization_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.interval_s = interval_s
        self.health = health or HealthSettings()
        self.hold_report_s = hold_report_s
        self.cpu_initialization_s = cpu_initialization_s
        self.catalog = default_catalog()
        self.serdes = SerdeRegistry(settings, self.catalog, auto_register=True)
        # Two locks: _lock guards what is managed (commands vs steps); _produce_lock
        # only the producer, so a backend reporting from its own thread never waits
        # for a step that is waiting for the backend.
        self._lock = threading.RLock()
        self._produce_lock = threading.Lock()
        self.producer = TypedProducer(
            settings, catalog=self.catalog, serdes=self.serdes, source="bar-swarm"
        )
        self.producer.check_topics([DECISIONS_TOPIC, REPLICAS_TOPIC, HEARTBEATS_TOPIC])
        self._admin = admin_client(settings)
        self._heartbeats = _Heartbeats(settings, self.serdes)
        self._managed: dict[str, _Managed] = {}
        self.decisions: list[ScalingDecision] = []
        self._commands: Consumer | None = None
        if follow_commands:
            self._commands = self._open_commands()

    # -- what is managed ---------------------------------------------------------
    def manage(
        self,
        manifest: AgentManifest,
        policy: ScalingPolicy | None = None,
        *,
        replicas: int | None = None,
        **deploy_options: object,
    ) -> None:
        """Deploy ``manifest``'s agent on the backend with ``replicas`` (default the
        policy's minimum) and autoscale it from now on. ``deploy_options`` go to the
        backend's ``deploy`` (the local backend needs ``manifest_path``)."""
        policy = policy or default_policy(replicas)
        agent_type = str(deploy_options.get("name") or manifest.name)
        topic = f"bar.tasks.{agent_type}"
        with self._lock:
            old = self._managed.pop(agent_type, None)
            if old is not None:
                old.ends.close()
            ends = EndOffsets(self.settings, [topic])
            self._managed[agent_type] = _Managed(
                manifest.model_copy(update={"name": agent_type}), policy, ScalingHistory(), ends
            )
            start = policy.clamp(replicas if replicas is not None else policy.min_replicas)
            self.backend.deploy(manifest, start, **deploy_options)

    def set_policy(self, agent_type: str, policy: ScalingPolicy) -> None:
        """Scale ``agent_type`` by ``policy`` from the next step on (cooldowns kept)."""
        with self._lock:
            managed = self._managed.get(agent_type)
            if managed is None:
                raise BuildKitError(
                    f'agent type "{agent_type}" is not managed by this controller '
                    f"(managed: {', '.join(sorted(self._managed)) or 'none'})"
                )
            managed.policy = policy

    def managed(self) -> dict[str, ScalingPolicy]:
        with self._lock:
            return {name: m.policy for name, m in self._managed.items()}

    def report_replica(self, event: ReplicaEvent) -> None:
        """Publish a replica event (the backends' ``report`` callback)."""
        with self._produce_lock:
            self.producer.produce(REPLICAS_TOPIC, event, key=event.agent_type)
            self.producer.poll(0)

    # -- the loop ----------------------------------------------------------------
    def run(self, stop: threading.Event, after_step: Callable[[], object] | None = None) -> None:
        """Step every ``interval_s`` until ``stop`` is set, calling ``after_step`` after
        each. A step failing with a :class:`BuildKitError` (the broker away for a moment)
        is logged and the next one tried; anything else ends the loop."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.step()
            except BuildKitError as exc:
                log.error("swarm step failed: %s", exc)
            if after_step is not None:
                after_step()
            stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def step(self) -> list[ScalingDecision]:
        """One pass: commands, heartbeats, then measure-decide-apply and health per type."""
        if self._commands is not None:
            self._follow_commands()
        self._heartbeats.poll()
        decisions = []
        with self._lock:
            for agent_type, managed in list(self._managed.items()):
                decision = self._scale(agent_type, managed)
                decisions.append(decision)
                self._check_health(agent_type)
        with self._produce_lock:
            self.producer.flush()
        return decisions

    def observe(self, agent_type: str) -> Observation:
        """What the policy sees for ``agent_type`` right now."""
        managed = self._managed[agent_type]
        lag = group_lag(self.settings, self._admin, f"bar-agent-{agent_type}", managed.ends)
        cpu, memory = [], []
        request_cpu = managed.manifest.resources.cpu_millicores()
        request_memory = managed.manifest.resources.memory_bytes()
        now, mono = time.time(), time.monotonic()
        for replica_id, beat in self._heartbeats.of(agent_type).items():
            if beat.state in (ReplicaState.DRAINING, ReplicaState.STARTING):
                continue
            if now - beat.sent_at.timestamp() > self.health.deadline_s:
                continue
            # HPA's CPU initialization period: a process starting up burns CPU on
            # imports and connecting, which says nothing about its load.
            seen = self._heartbeats.first_seen.get(replica_id, mono)
            if mono - seen >= self.cpu_initialization_s:
                cpu.append(beat.cpu_percent * 1000 / request_cpu if request_cpu else 0.0)
            memory.append(100.0 * beat.memory_bytes / request_memory if request_memory else 0.0)
        return Observation(
            agent_type=agent_type,
            current_replicas=self.backend.replicas(agent_type),
            lag=lag.total,
            cpu_percent=tuple(cpu),
            memory_percent=tuple(memory),
            at_ms=_now_ms(),
        )

    def _scale(self, agent_type: str, managed: _Managed) -> ScalingDecision:
        observation = self.observe(agent_type)
        decision = decide_scale(managed.policy, observation, managed.history)
        if decision.desired != observation.current_replicas:
            self.backend.scale(agent_type, decision.desired)
        managed.history = managed.history.record(decision)
        self.decisions.append(decision)
        del self.decisions[:-1000]
        summary = (decision.action, decision.desired, decision.recommended)
        now = time.monotonic()
        if (
            decision.action != "hold"
            or summary != managed.last_published
            or now - managed.last_published_at >= self.hold_report_s
        ):
            with self._produce_lock:
                self.producer.produce(DECISIONS_TOPIC, decision_event(decision), key=agent_type)
            managed.last_published, managed.last_published_at = summary, now
        if decision.action != "hold":
            log.info("%s: %s", agent_type, decision.reason)
        return decision

    def _check_health(self, agent_type: str) -> None:
        live = getattr(self.backend, "live_replicas", None)
        if live is None:
            return  # the backend's own probes (Kubernetes liveness) look after it
        beats = self._heartbeats.of(agent_type)
        now = time.time()
        for replica_id, started_at in live(agent_type).items():
            beat = beats.get(replica_id)
            if beat is None:
                silent_for = now - started_at
                if silent_for <= self.health.startup_grace_s:
                    continue
                grace = self.health.startup_grace_s
                why = f"no heartbeat {silent_for:.1f} s after start (grace {grace:g} s)"
            else:
                silent_for = now - beat.sent_at.timestamp()
                if silent_for <= self.health.deadline_s:
                    continue
                why = (
                    f"no heartbeat for {silent_for:.1f} s > failureThreshold "
                    f"{self.health.failure_threshold} x healthCheckInterval "
                    f"{self.health.health_check_interval_s:g} s"
                )
            self.report_replica(
                ReplicaEvent(
                    event_id=uuid.uuid4().hex,
                    agent_type=agent_type,
                    replica_id=replica_id,
                    kind=ReplicaEventKind.UNHEALTHY,
                    at=datetime.now(UTC),
                    backend=self.backend.name,
                    reason=f"{why}; replacing it",
                )
            )
            self.backend.replace(agent_type, replica_id, why)
            self._heartbeats.latest.pop(replica_id, None)

    # -- operator commands ---------------------------------------------------------
    def _open_commands(self) -> Consumer:
        consumer = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": "bar-swarm-commands",  # assignment only
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": 10,
                    "log_level": 0,
                }
            )
        )
        md = require_topics(consumer, self.settings, [COMMANDS_TOPIC])
        consumer.assign(
            [TopicPartition(COMMANDS_TOPIC, p, 0) for p in md.topics[COMMANDS_TOPIC].partitions]
        )
        # Fold everything already there into the final wanted state before acting,
        # so a deploy later undeployed never starts a process.
        wanted: dict[str, SwarmCommand] = {}
        scales: dict[str, SwarmCommand] = {}
        eof: set[int] = set()
        deadline = time.monotonic() + self.settings.client_timeout_s * 2
        partitions = set(md.topics[COMMANDS_TOPIC].partitions)
        while eof != partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition() or 0)
                continue
            command = self._decode_command(msg)
            if command is None:
                continue
            if command.kind == SwarmCommandKind.DEPLOY:
                wanted[command.agent_type] = command
                scales.pop(command.agent_type, None)
            elif command.kind == SwarmCommandKind.UNDEPLOY:
                wanted.pop(command.agent_type, None)
                scales.pop(command.agent_type, None)
            elif command.kind == SwarmCommandKind.SCALE:
                scales[command.agent_type] = command
        for command in wanted.values():
            self._apply_command(command)
        for command in scales.values():
            if command.agent_type in wanted:
                self._apply_command(command)
        return consumer

    def _follow_commands(self) -> None:
        assert self._commands is not None
        while True:
            msg = self._commands.poll(0)
            if msg is None:
                return
            if msg.error() is not None:
                continue
            command = self._decode_command(msg)
            if command is not None:
                self._apply_command(command)

    def _decode_command(self, msg: object) -> SwarmCommand | None:
        try:
            command = self.serdes.for_topic(COMMANDS_TOPIC).decode(msg.value())  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("bar.swarm.commands: undecodable record: %s", exc)
            return None
        return command if isinstance(command, SwarmCommand) else None

    def _apply_command(self, command: SwarmCommand) -> None:
        """Carry out one operator command; a bad one is logged and skipped, never fatal."""
        try:
            with self._lock:
                if command.kind == SwarmCommandKind.DEPLOY:
                    if not command.manifest_path:
                        raise BuildKitError("deploy command without a manifest path")
                    path = Path(command.manifest_path)
                    manifest = load_manifest(path)
                    policy = (
                        ScalingPolicy.model_validate(json.loads(command.policy_json))
                        if command.policy_json
                        else default_policy(command.replicas)
                    )
                    self.manage(
                        manifest,
                        policy,
                        replicas=command.replicas,
                        manifest_path=path,
                        name=command.agent_type if command.agent_type != manifest.name else None,
                    )
                elif command.kind == SwarmCommandKind.SCALE:
                    managed = self._managed.get(command.agent_type)
                    if managed is None:
                        raise BuildKitError(
                            f'agent type "{command.agent_type}" is not deployed '
                            f"(managed: {', '.join(sorted(self._managed)) or 'none'})"
                        )
                    replicas = command.replicas if command.replicas is not None else 0
                    self.backend.scale(command.agent_type, replicas)
                    managed.history = replace(managed.history, last_change_ms=_now_ms())
                elif command.kind == SwarmCommandKind.UNDEPLOY:
                    managed = self._managed.pop(command.agent_type, None)
                    if managed is not None:
                        managed.ends.close()
                        self.backend.scale(command.agent_type, 0)
            log.info("applied %s %s (%s)", command.kind, command.agent_type, command.command_id)
        except Exception as exc:
            log.error(
                "bar.swarm.commands: %s %s (%s) not applied: %s",
                command.kind,
                command.agent_type,
                command.command_id,
                exc,
            )

    def close(self) -> None:
        """Stop following; the backend is the caller's to close (it may outlive us)."""
        with self._lock:
            for managed in self._managed.values():
                managed.ends.close()
            self._managed.clear()
        self._heartbeats.close()
        if self._commands is not None:
            self._commands.close()
        self.producer.flush()
        self.producer.close()

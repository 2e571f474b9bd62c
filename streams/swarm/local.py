"""The local backend: every replica is an OS process on this machine.

A replica is ``python -m agents.runtime.serve --manifest PATH --replica-id ID`` (plus
``--name`` / ``--entrypoint`` when the deployment overrides them). A supervisor
thread watches the processes every ``poll_interval_s``:

* **Memory limit.** The manifest's ``resources.limits.memory`` is enforced on the
  resident set (psutil, the process and its children): above it the replica is
  killed (SIGKILL, as the kernel's OOM killer does under a cgroup limit), reported
  as ``MEMORY_KILLED`` with the memory seen and the limit, and restarted. Polling
  leaves a window of ``poll_interval_s`` in which a fast allocation can overshoot;
  on Kubernetes the cgroup enforces the limit exactly. CPU limits need cgroups and
  are not enforced locally (recorded in the replica's STARTED event reason).
* **Crashes.** A replica that exits without being asked to is reported as
  ``CRASHED`` with its exit code and restarted after a backoff that doubles per
  consecutive crash (``restart_backoff_s`` up to ``max_backoff_s``; it resets once
  a replica stays up for ``stable_after_s``), like a Kubernetes ``CrashLoopBackOff``.
* **Scale down** sends SIGTERM to the newest replicas: the runner finishes its task
  in flight, says DRAINING, deregisters and exits 0 (``STOPPED``). One still running
  after ``stop_grace_s`` is killed.

Every event goes to ``report`` (the controller publishes them on
``bar.swarm.replicas``). The backend holds no Kafka client of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from agents.runtime.manifest import AgentManifest
from buildkit.contracts.swarm import ReplicaEvent, ReplicaEventKind
from buildkit.errors import BuildKitError

__all__ = ["LocalBackend", "LocalDeployment", "Replica"]

log = logging.getLogger(__name__)

Report = Callable[[ReplicaEvent], None]


@dataclass
class LocalDeployment:
    """How to start one agent type's replicas."""

    manifest: AgentManifest
    manifest_path: Path
    entrypoint: str | None = None
    #: Runs the agent under this name (its task topic ``bar.tasks.<name>``).
    name: str | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def agent_type(self) -> str:
        return self.name or self.manifest.name

    @property
    def memory_limit_bytes(self) -> int | None:
        limits = self.manifest.resources.limits
        return limits.memory_bytes() if limits else None


@dataclass
class Replica:
    """One process of a deployment."""

    replica_id: str
    agent_type: str
    process: subprocess.Popen[bytes]
    started_at: float
    restarts: int = 0
    stopping: bool = False
    stop_sent_at: float | None = None
    #: Set when the supervisor killed it on purpose (memory limit, replacement).
    killed_for: ReplicaEventKind | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


class LocalBackend:
    """Runs replicas as child processes; see the module docstring for what it enforces."""

    name = "local"

    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        report: Report | None = None,
        log_dir: Path | None = None,
        heartbeat_interval_s: float = 2.0,
        poll_interval_s: float = 0.1,
        restart_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stable_after_s: float = 30.0,
        stop_grace_s: float = 30.0,
        python: str = sys.executable,
    ) -> None:
        self.env = dict(env if env is not None else os.environ)
        self.report = report or (lambda event: None)
        self.log_dir = log_dir
        self.heartbeat_interval_s = heartbeat_interval_s
        self.poll_interval_s = poll_interval_s
        self.restart_backoff_s = restart_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.stop_grace_s = stop_grace_s
        self.python = python
        self._token = uuid.uuid4().hex[:4]
        self._serial = 0
        self._deployments: dict[str, LocalDeployment] = {}
        self._replicas: dict[str, list[Replica]] = {}
        self._stopping: list[Replica] = []
        #: Restarts waiting for their backoff: (due monotonic time, agent type, restarts).
        self._pending: list[tuple[float, str, int]] = []
        self._crash_streak: dict[str, int] = {}
        self._lock = threading.RLock()
        self._outbox: list[ReplicaEvent] = []
        self._closed = threading.Event()
        self._supervisor = threading.Thread(
            target=self._supervise, name="swarm-local-supervisor", daemon=True
        )
        self._supervisor.start()

    # -- ScalingBackend ---------------------------------------------------------
    def deploy(
        self,
        manifest: AgentManifest,
        replicas: int,
        *,
        manifest_path: Path | None = None,
        entrypoint: str | None = None,
        name: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """Know how to run ``manifest``'s agent and run ``replicas`` of it.

        ``manifest_path`` is required: replicas are other processes and load it
        themselves. ``name`` runs the agent under another name (tests use it to get a
        task topic of their own)."""
        if manifest_path is None:
            raise BuildKitError(
                f"local backend: deploying {manifest.name} needs its manifest file "
                "(replicas are separate processes that load it)"
            )
        deployment = LocalDeployment(
            manifest, Path(manifest_path).resolve(), entrypoint, name, extra_args
        )
        with self._lock:
            self._deployments[deployment.agent_type] = deployment
            self._replicas.setdefault(deployment.agent_type, [])
        self.scale(deployment.agent_type, replicas)

    def replicas(self, agent_type: str) -> int:
        with self._lock:
            pending = sum(1 for _, t, _ in self._pending if t == agent_type)
            return len(self._replicas.get(agent_type, [])) + pending

    def scale(self, agent_type: str, replicas: int) -> None:
        if replicas < 0:
            raise BuildKitError(f"cannot scale {agent_type} to {replicas} replicas")
        with self._lock:
            if agent_type not in self._deployments:
                raise BuildKitError(
                    f'agent type "{agent_type}" is not deployed on the local backend '
                    f"(deployed: {', '.join(sorted(self._deployments)) or 'none'}) — "
                    f"run: buildkit agents deploy --agent-id {agent_type}"
                )
            running = self._replicas[agent_type]
            while self.replicas(agent_type) < replicas:
                running.append(self._start(agent_type, restarts=0, reason="scale up"))
            # Pending restarts go first (they are not running), then the newest replicas.
            while self.replicas(agent_type) > replicas and any(
                t == agent_type for _, t, _ in self._pending
            ):
                index = max(i for i, (_, t, _) in enumerate(self._pending) if t == agent_type)
                self._pending.pop(index)
            while len(running) > replicas:
                self._stop(running.pop(), reason="scale down")
        self._deliver()

    def replace(self, agent_type: str, replica_id: str, reason: str) -> bool:
        with self._lock:
            running = self._replicas.get(agent_type, [])
            replica = next((r for r in running if r.replica_id == replica_id), None)
            if replica is None:
                return False
            running.remove(replica)
            replica.killed_for = ReplicaEventKind.UNHEALTHY
            replica.process.kill()
            self._stopping.append(replica)
            running.append(
                self._start(
                    agent_type,
                    restarts=replica.restarts + 1,
                    reason=f"replaces {replica_id}: {reason}",
                )
            )
        self._deliver()
        return True

    def live_replicas(self, agent_type: str) -> dict[str, float]:
        """Replica id → wall-clock start time of every running replica of ``agent_type``."""
        with self._lock:
            now_wall, now_mono = time.time(), time.monotonic()
            return {
                r.replica_id: now_wall - (now_mono - r.started_at)
                for r in self._replicas.get(agent_type, [])
            }

    def pid(self, agent_type: str, replica_id: str) -> int | None:
        """The process id of running replica ``replica_id``, if it runs."""
        with self._lock:
            running = self._replicas.get(agent_type, [])
            return next((r.pid for r in running if r.replica_id == replica_id), None)

    def deployed(self) -> list[str]:
        with self._lock:
            return sorted(self._deployments)

    def close(self) -> None:
        """Stop every replica (SIGTERM, then SIGKILL after the grace period) and the
        supervisor."""
        with self._lock:
            for agent_type in list(self._replicas):
                running = self._replicas[agent_type]
                while running:
                    self._stop(running.pop(), reason="backend closed")
            self._pending.clear()
        deadline = time.monotonic() + self.stop_grace_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._stopping:
                    break
            time.sleep(self.poll_interval_s)
        self._closed.set()
        self._supervisor.join(5)
        with self._lock:
            for replica in self._stopping:
                if replica.process.poll() is None:
                    replica.process.kill()
                    replica.process.wait(5)
            self._stopping.clear()
        self._deliver()

    # -- processes --------------------------------------------------------------
    def _command(self, deployment: LocalDeployment, replica_id: str) -> list[str]:
        command = [
            self.python,
            "-m",
            "agents.runtime.serve",
            "--manifest",
            str(deployment.manifest_path),
            "--replica-id",
            replica_id,
            "--heartbeat-interval",
            str(self.heartbeat_interval_s),
        ]
        if deployment.entrypoint:
            command += ["--entrypoint", deployment.entrypoint]
        if deployment.name:
            command += ["--name", deployment.name]
        return [*command, *deployment.extra_args]

    def _start(self, agent_type: str, *, restarts: int, reason: str) -> Replica:
        deployment = self._deployments[agent_type]
        self._serial += 1
        replica_id = f"{agent_type}-{self._token}-{self._serial}"
        output: int | object = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{replica_id}.log").open("ab")
        process = subprocess.Popen(
            self._command(deployment, replica_id),
            env=self.env,
            stdout=output,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the controller's terminal is ours to relay
        )
        if not isinstance(output, int):
            output.close()  # type: ignore[attr-defined]
        replica = Replica(replica_id, agent_type, process, time.monotonic(), restarts)
        limit = deployment.memory_limit_bytes
        notes = [reason]
        if limit is not None:
            notes.append(f"memory limit {limit} bytes enforced on RSS")
        if deployment.manifest.resources.limits is not None:
            notes.append("cpu limit not enforced locally (needs cgroups)")
        self._emit(replica, ReplicaEventKind.STARTED, reason="; ".join(notes), limit=limit)
        return replica

    def _stop(self, replica: Replica, *, reason: str) -> None:
        replica.stopping = True
        replica.stop_sent_at = time.monotonic()
        if replica.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                replica.process.send_signal(signal.SIGTERM)
        replica.killed_for = None
        self._stopping.append(replica)
        log.info("stopping %s (%s)", replica.replica_id, reason)

    def _emit(
        self,
        replica: Replica,
        kind: ReplicaEventKind,
        *,
        reason: str = "",
        exit_code: int | None = None,
        memory: int | None = None,
        limit: int | None = None,
    ) -> None:
        event = ReplicaEvent(
            event_id=uuid.uuid4().hex,
            agent_type=replica.agent_type,
            replica_id=replica.replica_id,
            kind=kind,
            at=datetime.now(UTC),
            backend=self.name,
            pid=replica.pid,
            exit_code=exit_code,
            memory_bytes=memory,
            memory_limit_bytes=limit,
            restarts=replica.restarts,
            reason=reason,
        )
        # Delivered by _deliver() once the lock is released: the report callback may
        # take locks of its own (the controller's), and must never wait on ours.
        self._outbox.append(event)

    def _deliver(self) -> None:
        with self._lock:
            events, self._outbox = self._outbox, []
        for event in events:
            try:
                self.report(event)
            except Exception:  # reporting must never stop supervision
                log.exception("could not report %s of %s", event.kind, event.replica_id)

    # -- supervision ------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._closed.wait(self.poll_interval_s):
            try:
                with self._lock:
                    self._check_once()
            except Exception:
                log.exception("local supervisor pass failed")
            self._deliver()

    def _check_once(self) -> None:
        now = time.monotonic()
        for agent_type, running in self._replicas.items():
            limit = self._deployments[agent_type].memory_limit_bytes
            for replica in list(running):
                code = replica.process.poll()
                if code is None:
                    if limit is not None:
                        self._enforce_memory(replica, running, limit)
                    if now - replica.started_at > self.stable_after_s:
                        self._crash_streak[agent_type] = 0
                    continue
                running.remove(replica)
                self._emit(
                    replica,
                    ReplicaEventKind.CRASHED,
                    exit_code=code,
                    reason=f"exited with code {code} without being asked to stop",
                )
                self._schedule_restart(agent_type, replica.restarts + 1)
        for replica in list(self._stopping):
            code = replica.process.poll()
            if code is None:
                if (
                    replica.stop_sent_at is not None
                    and now - replica.stop_sent_at > self.stop_grace_s
                ):
                    replica.process.kill()
                continue
            self._stopping.remove(replica)
            if replica.killed_for is None:
                self._emit(
                    replica, ReplicaEventKind.STOPPED, exit_code=code, reason="stopped on request"
                )
        due = [entry for entry in self._pending if entry[0] <= now]
        for entry in due:
            self._pending.remove(entry)
            _, agent_type, restarts = entry
            if agent_type in self._deployments:
                replica = self._start(agent_type, restarts=restarts, reason="restart after crash")
                self._replicas[agent_type].append(replica)

    def _enforce_memory(self, replica: Replica, running: list[Replica], limit: int) -> None:
        try:
            process = psutil.Process(replica.pid)
            rss = process.memory_info().rss + sum(
                child.memory_info().rss for child in process.children(recursive=True)
            )
        except psutil.Error:
            return  # exited between poll() and here: the next pass reports it
        if rss <= limit:
            return
        replica.process.kill()
        replica.process.wait(5)
        running.remove(replica)
        replica.killed_for = ReplicaEventKind.MEMORY_KILLED
        self._emit(
            replica,
            ReplicaEventKind.MEMORY_KILLED,
            exit_code=replica.process.returncode,
            memory=rss,
            limit=limit,
            reason=f"resident memory {rss} bytes exceeded the limit of {limit} bytes",
        )
        self._schedule_restart(replica.agent_type, replica.restarts + 1)

    def _schedule_restart(self, agent_type: str, restarts: int) -> None:
        streak = self._crash_streak.get(agent_type, 0)
        self._crash_streak[agent_type] = streak + 1
        delay = min(self.max_backoff_s, self.restart_backoff_s * 2**streak)
        self._pending.append((time.monotonic() + delay, agent_type, restarts))

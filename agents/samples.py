"""Sample workers for load tests, demos and benchmarks: quick, slow and memory-hungry.

Their work is synthetic and says so (metrics ``echo``, ``slept_s``, ``mb``): they exist
to exercise the runtime and SWARM — scaling, balancing, limits — with real replica
processes, not to stand in for a real agent's output. Each has the manifest of
``agents/manifests/test-generator.yaml`` unless given another; run one under any
name with ``python -m agents.runtime.serve --entrypoint agents.samples:SleepyAgent
--name my-load-test --manifest agents/manifests/test-generator.yaml``, or in-process
with ``SleepyAgent(name="my-load-test")``.

Each records the ids of the tasks it ran in ``calls`` and reads its knobs from the
task's ``parameters_json`` (a JSON object; anything else counts as ``{}``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agents.runtime.agent import Agent, TaskOutcome
from agents.runtime.manifest import AgentManifest, builtin_manifests_dir, load_manifest
from agents.runtime.serve import rename_manifest
from buildkit.contracts.events import AgentTask

__all__ = ["MANIFEST", "EchoAgent", "HogAgent", "SleepyAgent", "parameters"]

#: The manifest every sample agent starts from (``test-generator``, a worker).
MANIFEST = load_manifest(builtin_manifests_dir() / "test-generator.yaml")


def parameters(task: AgentTask) -> dict[str, Any]:
    """The task's ``parameters_json`` as a dict (``{}`` if it is not a JSON object)."""
    try:
        found = json.loads(task.parameters_json or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


class _SampleAgent(Agent):
    manifest = MANIFEST

    def __init__(self, manifest: AgentManifest | None = None, *, name: str | None = None) -> None:
        if manifest is None:
            manifest = type(self).manifest
        super().__init__(rename_manifest(manifest, name) if name else manifest)
        self.calls: list[str] = []


class EchoAgent(_SampleAgent):
    """Answers at once: metric ``echo = 1``, output ``task`` = the task id."""

    async def handle(self, task: AgentTask) -> TaskOutcome:
        self.calls.append(task.task_id)
        return TaskOutcome(metrics={"echo": 1.0}, outputs={"task": task.task_id})


class SleepyAgent(_SampleAgent):
    """Sleeps ``sleep_s`` seconds (default 0.3), then answers with metric ``slept_s``."""

    async def handle(self, task: AgentTask) -> TaskOutcome:
        self.calls.append(task.task_id)
        sleep_s = float(parameters(task).get("sleep_s", 0.3))
        await asyncio.sleep(sleep_s)
        return TaskOutcome(metrics={"slept_s": sleep_s}, outputs={"task": task.task_id})


class HogAgent(_SampleAgent):
    """Allocates ``mb`` megabytes (default 64, every page touched) and holds them for
    ``hold_s`` seconds (default 1) before answering with metric ``mb``."""

    async def handle(self, task: AgentTask) -> TaskOutcome:
        self.calls.append(task.task_id)
        knobs = parameters(task)
        mb = int(knobs.get("mb", 64))
        hold_s = float(knobs.get("hold_s", 1.0))
        # Written, not just reserved: calloc'd zero pages would not count as resident.
        hog = b"\x01" * (mb * 1024 * 1024)
        await asyncio.sleep(hold_s)
        del hog
        return TaskOutcome(metrics={"mb": float(mb)}, outputs={"task": task.task_id})

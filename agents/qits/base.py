"""What every QITS agent shares: its policy, its input, its artifact store.

A QITS agent is an :class:`~agents.runtime.agent.Agent` whose manifest may carry a
``policy:`` mapping, validated at construction by the agent's pydantic model (a
mistake stops the agent from starting, naming the field); a task's ``policy``
parameter overrides fields of it for that task. :meth:`QitsAgent.run` does the work
(blocking: test runs, servers, scanners) in a worker thread and returns the
:class:`~agents.runtime.agent.TaskOutcome` or raises an
:class:`~agents.runtime.agent.AgentFault`.

Artifacts go to the :class:`~agents.qits.artifacts.ArtifactStore` given to the
constructor, by default the local one under ``<data_dir>/artifacts``; ``data_dir``
defaults to ``BAR_DATA_DIR`` (read once, when the agent is built by its process).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agents.qits.artifacts import ArtifactStore, LocalArtifactStore
from agents.qits.inputs import QitsInput, parse_task
from agents.runtime.agent import Agent, AgentFault, TaskOutcome
from agents.runtime.manifest import AgentManifest, builtin_manifests_dir, load_manifest
from buildkit.contracts.events import AgentTask
from buildkit.errors import BuildKitError, ConfigError

__all__ = [
    "BAD_POLICY",
    "SPEC_ARTIFACT",
    "QitsAgent",
    "QitsPolicy",
    "QitsPolicyError",
    "fault_from",
]

#: Fault code of a task whose ``policy`` override is invalid.
BAD_POLICY = "qits.bad_policy"
#: The artifact the api-design stage writes and later stages read.
SPEC_ARTIFACT = "openapi-spec.yaml"


class QitsPolicyError(ConfigError):
    """A QITS agent's policy (manifest ``policy:``) is invalid; names the field."""


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f'field "policy.{".".join(str(p) for p in e["loc"])}": {e["msg"]}' for e in exc.errors()
    )


class QitsPolicy(BaseModel):
    """Policy fields every QITS agent has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Post the report as a note on the issue (or merge request) the run came from.
    notes: bool = True


P = TypeVar("P", bound=QitsPolicy)


def fault_from(exc: BuildKitError, default_code: str) -> AgentFault:
    """A QITS library error as an agent fault, keeping its ``code`` and ``retryable``
    (the errors of :mod:`qits.errors` carry both)."""
    return AgentFault(
        str(getattr(exc, "code", default_code)),
        str(exc),
        retryable=bool(getattr(exc, "retryable", False)),
    )


class QitsAgent(Agent, Generic[P]):
    """Base class of the QITS agents: set the class attributes, implement :meth:`run`."""

    #: File name (without ``.yaml``) of the built-in manifest used when none is given.
    manifest_file: ClassVar[str]
    #: The pydantic model of this agent's ``policy:``.
    policy_model: type[P]

    def __init__(
        self,
        manifest: AgentManifest | None = None,
        *,
        data_dir: Path | None = None,
        store: ArtifactStore | None = None,
    ) -> None:
        if manifest is None:
            manifest = load_manifest(builtin_manifests_dir() / f"{self.manifest_file}.yaml")
        super().__init__(manifest)
        #: The manifest's policy, validated; a task may override fields of it.
        try:
            self.policy: P = self.policy_model.model_validate(dict(self.manifest.policy))
        except ValidationError as exc:
            raise QitsPolicyError(
                f'agent "{self.name}": invalid policy: {_problems(exc)} (policy fields: '
                f"{', '.join(self.policy_model.model_fields)})"
            ) from exc
        if data_dir is None:
            from buildkit.settings import Settings

            data_dir = Settings().data_dir
        #: Where state of this agent lives (artifacts, performance baselines).
        self.data_dir = data_dir.absolute()
        self.store: ArtifactStore = store or LocalArtifactStore(self.data_dir / "artifacts")

    def run(self, inp: QitsInput, policy: P) -> TaskOutcome:
        """Do the work of one task (blocking); raise :class:`AgentFault` on a failure."""
        raise NotImplementedError(f"{type(self).__name__}.run is not implemented")

    async def handle(self, task: AgentTask) -> TaskOutcome:
        """Parse the task, apply its policy override, and :meth:`run` it in a thread."""
        inp = parse_task(task)
        policy = self.policy
        if inp.policy:
            merged: dict[str, Any] = {**self.policy.model_dump(exclude_unset=True), **inp.policy}
            try:
                policy = self.policy_model.model_validate(merged)
            except ValidationError as exc:
                raise AgentFault(BAD_POLICY, f"parameter {_problems(exc)}") from exc
        # On a task timeout the thread is abandoned, not killed; its subprocesses end at
        # their own timeouts.
        return await asyncio.to_thread(self.run, inp, policy)

    def output(self, inp: QitsInput, name: str) -> Path:
        """A fresh local path for this task's output artifact ``name``."""
        return self.store.location(inp.run_id, inp.stage, name)

    def spec_of(self, inp: QitsInput) -> str | Path:
        """The run's OpenAPI document: the upstream ``openapi-spec.yaml`` artifact, else
        the ``spec`` parameter or workflow input (inline text or a reference)."""
        if SPEC_ARTIFACT in inp.artifacts or not inp.spec:
            return inp.artifact(SPEC_ARTIFACT, self.store)
        if "\n" in inp.spec or inp.spec.lstrip().startswith("{"):
            return inp.spec
        return inp.artifact(SPEC_ARTIFACT, self.store, inp.spec)

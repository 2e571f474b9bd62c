"""The workflow spec as typed data: what a validated workflow YAML file becomes.

The YAML shape is the architecture document's (name, version, trigger, stages with
agent, dependencies, inputs, outputs, conditions) plus per-stage ``timeout``,
``retries`` with ``backoff``, ``on_failure`` and ``fallbackLocal``, and
workflow-level ``inputs``. :mod:`streams.roe.spec` parses and validates files into
these models; the decider only ever sees validated specs.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

REMOTE_PREFIX = "ossa://"


class Backoff(BaseModel):
    """Exponential backoff between stage attempts: initial * multiplier**(attempt-1), capped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_s: float = Field(default=1.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_s: float = Field(default=300.0, ge=0)

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
        return float(min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1)))


class StageSpec(BaseModel):
    """One stage: the agent that runs it, what it needs and makes, and how it may fail."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    agent: str
    dependencies: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int = Field(default=0, ge=0)
    backoff: Backoff = Backoff()
    on_failure: Literal["fail", "continue"] = "fail"
    fallback_local: bool = False

    @property
    def remote(self) -> tuple[str, str] | None:
        """``(network, agent)`` for an ``ossa://<network>/<agent>`` stage, else None."""
        if not self.agent.startswith(REMOTE_PREFIX):
            return None
        network, _, agent = self.agent[len(REMOTE_PREFIX) :].partition("/")
        return network, agent


class TriggerSpec(BaseModel):
    """What starts a run: a GitLab event kind (+ labels), or a cron schedule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str | None = None
    labels: tuple[str, ...] = ()
    cron: str | None = None


class InputSpec(BaseModel):
    """A workflow-level input: a name, whether it is required, and a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    required: bool = True
    default: str | None = None


class WorkflowSpec(BaseModel):
    """A validated workflow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    description: str | None = None
    inputs: tuple[InputSpec, ...] = ()
    trigger: tuple[TriggerSpec, ...] = ()
    stages: tuple[StageSpec, ...]

    @property
    def workflow_id(self) -> str:
        """Stable id: ``<slug of name>@<version>``, e.g. ``feature-development-workflow@0.1.0``."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return f"{slug}@{self.version}"

    def stage(self, name: str) -> StageSpec:
        """The stage called ``name``."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

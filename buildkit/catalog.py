"""The topic catalog: the one declaration of every topic the platform uses.

It drives ``buildkit topics apply`` (the only thing that creates topics), the
Strimzi ``KafkaTopic`` manifests, the serializers (which contract a topic
carries) and the audit archive (which topics to keep).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from buildkit.contracts.base import Event
from buildkit.contracts.events import (
    AgentHeartbeat,
    AgentRegistration,
    AgentResult,
    AgentTask,
    GitLabAction,
    GitLabActionOutcome,
    GitLabEvent,
)
from buildkit.contracts.roe import WorkflowCommand, WorkflowEvent
from buildkit.contracts.swarm import ReplicaEvent, ScalingDecisionEvent, SwarmCommand
from buildkit.errors import UnknownTopic

CleanupPolicy = Literal["delete", "compact", "compact,delete"]

#: The agents of the architecture document, each with its task topic ``bar.tasks.<agent>``.
AGENTS: tuple[str, ...] = (
    "api-first-enforcer",
    "test-generator",
    "api-builder",
    "quality-gate-enforcer",
    "tdd-enforcer",
    "version-sync",
    "branch-policy",
    "doc-sync",
    "security-auditor",
    "performance-monitor",
    "roadmap-tracker",
    "metrics-collector",
)

#: Consumer groups the platform itself runs, each with its dead-letter topic.
#: Partitions of every ``bar.tasks.<agent>`` topic: the most replicas of one agent
#: type that can take work at once (one partition per consumer; KEDA's Kafka scaler
#: caps replicas at it too). Above the architecture document's ``maxAgents: 20``;
#: the embedded broker cannot add partitions later.
AGENT_TASK_PARTITIONS = 24

PLATFORM_GROUPS: tuple[str, ...] = ("bar-audit-archiver",)


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, layout, retention and the contract its values carry.

    ``value_type`` None means raw bytes (dead-letter topics keep the original
    record, whatever it was). Keys are always UTF-8 strings: the entity id.
    """

    name: str
    value_type: type[Event] | None
    partitions: int = 3
    retention: timedelta | None = timedelta(days=7)
    cleanup_policy: CleanupPolicy = "delete"
    description: str = ""
    key_field: str | None = None
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def value_subject(self) -> str:
        """Schema registry subject of the values (TopicNameStrategy)."""
        return f"{self.name}-value"

    @property
    def key_schema(self) -> str:
        """The key's schema: always a plain UTF-8 string."""
        return "string"

    def key_for(self, value: Event) -> str | None:
        """The default key of ``value`` on this topic: its ``key_field``, as text."""
        if self.key_field is None:
            return None
        found = getattr(value, self.key_field, None)
        return None if found is None else str(found)

    def kafka_config(self) -> dict[str, str]:
        """The topic-level configs this spec sets on the broker."""
        config: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if "delete" in self.cleanup_policy:
            config["retention.ms"] = (
                "-1" if self.retention is None else str(int(self.retention.total_seconds() * 1000))
            )
        config.update(self.extra_config)
        return config


def task_topic_name(agent: str) -> str:
    """The task topic of local agent ``agent``: ``bar.tasks.<agent>``."""
    return f"bar.tasks.{agent}"


def task_spec(agent: str) -> TopicSpec:
    """The task topic of agent ``agent``, shipped or user-made: ``AGENT_TASK_PARTITIONS``
    partitions keyed by task id, consumed by group ``bar-agent-<agent>``."""
    return TopicSpec(
        task_topic_name(agent),
        AgentTask,
        partitions=AGENT_TASK_PARTITIONS,
        key_field="task_id",
        description=f"tasks for the {agent} agent (consumer group bar-agent-{agent})",
    )


def remote_task_topic_name(network: str, agent: str) -> str:
    """The task topic of agent ``agent`` on OSSA network ``network`` (``ossa://<network>/<agent>``).

    ``bar.ossa.<network>.tasks.<agent>``: one namespace per network, so the bridge to a
    network (MirrorMaker, an OSSA gateway) replicates ``bar.ossa.<network>.*`` and
    nothing else, and ACLs can be granted per network.
    """
    return f"bar.ossa.{network}.tasks.{agent}"


def remote_task_spec(network: str, agent: str) -> TopicSpec:
    """The spec of a remote agent's task topic: declared by deployments that use
    the network, since the catalog cannot know every network's agents."""
    return TopicSpec(
        remote_task_topic_name(network, agent),
        AgentTask,
        partitions=6,
        key_field="task_id",
        description=f"tasks for agent {agent} on OSSA network {network}",
    )


def dlq_topic_name(group: str) -> str:
    """The dead-letter topic of consumer group ``group``."""
    return f"bar.dlq.{group}"


def dlq_spec(group: str) -> TopicSpec:
    """The dead-letter topic spec for ``group``: raw records, errors in headers."""
    return TopicSpec(
        dlq_topic_name(group),
        None,
        partitions=1,
        retention=timedelta(days=30),
        description=f"records consumer group {group} could not process",
    )


class Catalog:
    """An ordered, name-indexed set of :class:`TopicSpec`."""

    def __init__(self, topics: Iterable[TopicSpec]) -> None:
        self._topics: dict[str, TopicSpec] = {}
        for spec in topics:
            if spec.name in self._topics:
                raise ValueError(f"topic {spec.name!r} is declared twice in the catalog")
            self._topics[spec.name] = spec

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(self._topics.values())

    def __len__(self) -> int:
        return len(self._topics)

    def __contains__(self, name: object) -> bool:
        return name in self._topics

    def names(self) -> list[str]:
        """Every topic name, in declaration order."""
        return list(self._topics)

    def get(self, name: str) -> TopicSpec:
        """The spec of ``name``; :class:`UnknownTopic` with the closest names otherwise."""
        try:
            return self._topics[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._topics, n=3)
            hint = f" — did you mean {', '.join(close)}?" if close else ""
            raise UnknownTopic(
                f'topic "{name}" is not in the topic catalog{hint} '
                "(`buildkit topics list` shows the catalog)"
            ) from None

    def find(self, name: str) -> TopicSpec | None:
        """The spec of ``name``, or None."""
        return self._topics.get(name)

    def with_dlq(self, group: str) -> Catalog:
        """This catalog plus the dead-letter topic of ``group`` (if not declared yet)."""
        if dlq_topic_name(group) in self._topics:
            return self
        return Catalog([*self, dlq_spec(group)])


def default_catalog() -> Catalog:
    """Every topic of Agent BuildKit."""
    tasks = [task_spec(agent) for agent in AGENTS]
    return Catalog(
        [
            *tasks,
            TopicSpec(
                "bar.tasks.results",
                AgentResult,
                partitions=6,
                retention=timedelta(days=30),
                key_field="task_id",
                description="results of every agent task attempt",
            ),
            TopicSpec(
                "bar.agents.heartbeats",
                AgentHeartbeat,
                retention=timedelta(days=1),
                key_field="replica_id",
                description="replica liveness and load",
            ),
            TopicSpec(
                "bar.agents.registry",
                AgentRegistration,
                partitions=1,
                retention=None,
                cleanup_policy="compact",
                key_field="agent_id",
                description="latest registration per agent id (compacted)",
            ),
            TopicSpec(
                "bar.gitlab.events",
                GitLabEvent,
                retention=timedelta(days=30),
                key_field="project_id",
                description="GitLab webhook deliveries, normalized, keyed by project",
            ),
            TopicSpec(
                "bar.gitlab.actions",
                GitLabAction,
                retention=timedelta(days=30),
                key_field="project_id",
                description="GitLab side effects for the sink to run (outbox), keyed by project",
            ),
            TopicSpec(
                "bar.gitlab.action-outcomes",
                GitLabActionOutcome,
                retention=timedelta(days=30),
                key_field="project_id",
                description="what the GitLab sink did with each action: done or failed, why",
            ),
            # One partition each: ROE runs as one active engine (a standby is fenced by
            # its transactional id), workflow traffic is orchestration-sized, and one
            # partition gives the event log one total order, so replay and "every
            # run's state" need no merge. Scaling out later means keying results by
            # run id too (bar.tasks.results is keyed by task id), not just more partitions.
            TopicSpec(
                "bar.roe.commands",
                WorkflowCommand,
                partitions=1,
                retention=timedelta(days=30),
                key_field="run_id",
                description="requests to the workflow engine: start, cancel, retry a stage",
            ),
            TopicSpec(
                "bar.roe.events",
                WorkflowEvent,
                partitions=1,
                retention=None,
                key_field="run_id",
                description="every workflow run's history; the engine's state is their fold",
            ),
            TopicSpec(
                "bar.swarm.decisions",
                ScalingDecisionEvent,
                partitions=1,
                retention=timedelta(days=30),
                key_field="agent_type",
                description="every SWARM scaling decision with its inputs and reason",
            ),
            TopicSpec(
                "bar.swarm.replicas",
                ReplicaEvent,
                partitions=1,
                retention=timedelta(days=30),
                key_field="agent_type",
                description="replica lifecycle: started, stopped, crashed, killed, unhealthy",
            ),
            # Unlimited retention: the controller folds it from the start to know what
            # is deployed, so it survives a restart of the controller.
            TopicSpec(
                "bar.swarm.commands",
                SwarmCommand,
                partitions=1,
                retention=None,
                key_field="agent_type",
                description="operator requests to SWARM: deploy, scale, undeploy an agent",
            ),
            *(dlq_spec(group) for group in PLATFORM_GROUPS),
        ]
    )

"""Deploy an agent: validate its manifest, make sure its task topic exists, and ask SWARM
to run it with a :class:`~buildkit.contracts.swarm.SwarmCommand` on ``bar.swarm.commands``.

``buildkit agents deploy`` is a thin shell over :func:`deploy_agent`. Nothing here starts a
process: the SWARM controller folds ``bar.swarm.commands`` and starts the replicas.
:func:`publish_swarm_command` is the one way to send any command (deploy, scale,
undeploy), for the CLI and for other code.
"""

from __future__ import annotations

import difflib
import getpass
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agents.runtime.manifest import AgentManifest, builtin_manifests_dir, load_manifest
from buildkit.catalog import AGENT_TASK_PARTITIONS, Catalog, TopicSpec, task_spec
from buildkit.contracts.swarm import SwarmCommand, SwarmCommandKind
from buildkit.errors import BuildKitError
from buildkit.producer import TypedProducer
from buildkit.settings import Settings
from buildkit.topics import TopicChange, apply_topics

__all__ = [
    "SWARM_COMMANDS_TOPIC",
    "DeployError",
    "Deployment",
    "deploy_agent",
    "deploy_command",
    "ensure_task_topic",
    "publish_swarm_command",
    "requested_by",
    "resolve_manifest",
    "swarm_command",
    "task_topic_spec",
]

#: Where operators' requests to SWARM go, keyed by agent type (see the topic catalog).
SWARM_COMMANDS_TOPIC = "bar.swarm.commands"


class DeployError(BuildKitError):
    """An agent cannot be deployed as asked: unknown agent, name mismatch, bad replicas."""


@dataclass(frozen=True)
class Deployment:
    """What :func:`deploy_agent` did: the command it published and the task topic's change."""

    command: SwarmCommand
    manifest: AgentManifest
    manifest_path: Path
    task_topic: TopicChange


def resolve_manifest(agent_id: str, manifest_path: Path | None) -> tuple[AgentManifest, Path]:
    """The manifest to deploy and its absolute path.

    Without ``manifest_path``, the shipped manifest named ``agent_id`` (an unknown id is a
    :class:`DeployError` listing the closest names). With it, the file must load (else the
    loader's ``file:line:column`` :class:`~agents.runtime.manifest.ManifestError`) and
    name ``agent_id``.
    """
    if manifest_path is None:
        shipped = {}
        folder = builtin_manifests_dir()
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            manifest = load_manifest(path)
            shipped[manifest.name] = (manifest, path.resolve())
        if agent_id not in shipped:
            close = difflib.get_close_matches(agent_id, shipped, n=3)
            hint = f" — did you mean {', '.join(close)}?" if close else ""
            raise DeployError(
                f'no shipped agent manifest named "{agent_id}"{hint} (`buildkit agents list`); '
                "for your own agent pass --manifest PATH"
            )
        return shipped[agent_id]
    path = manifest_path.expanduser().resolve()
    manifest = load_manifest(path)
    if manifest.name != agent_id:
        raise DeployError(
            f'--agent-id "{agent_id}" does not match the name "{manifest.name}" in {path} — '
            f"pass --agent-id {manifest.name}, or rename the agent in the manifest"
        )
    return manifest, path


def task_topic_spec(manifest: AgentManifest) -> TopicSpec:
    """The spec of the agent's task topic (:func:`buildkit.catalog.task_spec`)."""
    return task_spec(manifest.name)


def ensure_task_topic(settings: Settings, manifest: AgentManifest) -> TopicChange:
    """Create (or align) the agent's task topic; :class:`BrokerUnavailable` if Kafka is down."""
    (change,) = apply_topics(settings, Catalog([task_topic_spec(manifest)]))
    return change


def requested_by() -> str:
    """``user@host`` of this process, for the command's ``requested_by``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no USER/LOGNAME (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def swarm_command(
    kind: SwarmCommandKind,
    agent_type: str,
    *,
    replicas: int | None = None,
    manifest_path: Path | None = None,
) -> SwarmCommand:
    """A ``kind`` command for ``agent_type``: a fresh id, the time now, who asked."""
    now = datetime.now(UTC)
    return SwarmCommand(
        command_id=str(uuid.uuid4()),
        kind=kind,
        agent_type=agent_type,
        replicas=replicas,
        manifest_path=None if manifest_path is None else str(manifest_path),
        requested_by=requested_by(),
        # Avro timestamp-millis: what is sent is what is read back.
        at=now.replace(microsecond=now.microsecond // 1000 * 1000),
    )


def deploy_command(
    manifest: AgentManifest, manifest_path: Path, replicas: int | None = None
) -> SwarmCommand:
    """The DEPLOY command for ``manifest``."""
    return swarm_command(
        SwarmCommandKind.DEPLOY, manifest.name, replicas=replicas, manifest_path=manifest_path
    )


def publish_swarm_command(settings: Settings, command: SwarmCommand) -> None:
    """Send ``command`` to ``bar.swarm.commands`` keyed by agent type and wait for the
    broker's acknowledgement (:class:`~buildkit.errors.DeliveryError` if it does not come,
    :class:`~buildkit.errors.BrokerUnavailable` if Kafka does not answer). The CloudEvents
    id is the command id, so a consumer can de-duplicate a re-sent command."""
    with TypedProducer(settings) as producer:  # leaving the block flushes: the ack
        producer.produce(
            SWARM_COMMANDS_TOPIC,
            command,
            key=command.agent_type,
            event_id=command.command_id,
            correlation_id=command.command_id,
        )


def deploy_agent(
    settings: Settings,
    agent_id: str,
    manifest_path: Path | None = None,
    replicas: int | None = None,
) -> Deployment:
    """Validate, ensure the task topic, publish DEPLOY; ``replicas`` None lets SWARM's
    policy choose. Everything that needs no broker is checked before Kafka is touched."""
    if replicas is not None and not 1 <= replicas <= AGENT_TASK_PARTITIONS:
        raise DeployError(
            f"--replicas {replicas} is out of range: use 1 to {AGENT_TASK_PARTITIONS} (one "
            "replica per partition of the task topic can take work), or omit it to let "
            "SWARM's policy decide"
        )
    manifest, path = resolve_manifest(agent_id, manifest_path)
    change = ensure_task_topic(settings, manifest)
    command = deploy_command(manifest, path, replicas)
    publish_swarm_command(settings, command)
    return Deployment(command=command, manifest=manifest, manifest_path=path, task_topic=change)

"""Operator commands to SWARM on ``bar.swarm.commands`` other than deploy (which is
:mod:`agents.deploy`'s): scale and undeploy. Publish them with
:func:`agents.deploy.publish_swarm_command`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from agents.deploy import requested_by
from buildkit.contracts.swarm import SwarmCommand, SwarmCommandKind

__all__ = ["swarm_command"]


def swarm_command(
    kind: SwarmCommandKind, agent_type: str, *, replicas: int | None = None
) -> SwarmCommand:
    """A ``kind`` command for ``agent_type`` from this user on this host."""
    now = datetime.now(UTC)
    return SwarmCommand(
        command_id=str(uuid.uuid4()),
        kind=kind,
        agent_type=agent_type,
        replicas=replicas,
        requested_by=requested_by(),
        at=now.replace(microsecond=now.microsecond // 1000 * 1000),
    )

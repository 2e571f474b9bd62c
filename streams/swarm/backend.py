"""Where replicas run: the interface every SWARM backend implements.

The controller decides how many replicas an agent type should have; a backend makes
it so. :class:`~streams.swarm.local.LocalBackend` runs each replica as an OS process
on this machine; :class:`~streams.swarm.kubernetes.KubernetesBackend` scales the
agent's Deployment through the scale subresource and lets Kubernetes run the pods.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agents.runtime.manifest import AgentManifest

__all__ = ["ScalingBackend"]


@runtime_checkable
class ScalingBackend(Protocol):
    """Runs an agent type's replicas somewhere."""

    #: Short name recorded in replica events and decisions: ``local``, ``kubernetes``.
    name: str

    def deploy(self, manifest: AgentManifest, replicas: int) -> None:
        """Make ``manifest``'s agent type known to the backend, running ``replicas``."""
        ...

    def replicas(self, agent_type: str) -> int:
        """How many replicas the backend runs (or is asked to run) for ``agent_type``."""
        ...

    def scale(self, agent_type: str, replicas: int) -> None:
        """Run exactly ``replicas`` replicas of ``agent_type`` (0 stops them all)."""
        ...

    def replace(self, agent_type: str, replica_id: str, reason: str) -> bool:
        """Stop replica ``replica_id`` (found unhealthy) so a fresh one takes its place.
        False if the backend does not know that replica."""
        ...

    def close(self) -> None:
        """Release what the backend holds; the local backend stops its processes."""
        ...

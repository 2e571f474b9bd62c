"""The SWARM controller as a long-running service: ``python -m streams.swarm`` and
``buildkit swarm run`` (the dev stack starts it as its ``swarm`` part).

Creates the topics it and its replicas need if they are missing
(:func:`~streams.swarm.controller.ensure_swarm_topics`), builds the backend, steps the
controller until SIGTERM or Ctrl-C, and writes a heartbeat file each step so
``buildkit dev status`` can tell it is alive. Stopping it stops the local backend's
replicas (they are its children).
"""

from __future__ import annotations

import logging
import signal
import threading

from buildkit.audit.heartbeat import write_heartbeat
from buildkit.errors import BuildKitError
from buildkit.settings import Settings
from streams.swarm.backend import ScalingBackend
from streams.swarm.controller import HealthSettings, SwarmController, ensure_swarm_topics
from streams.swarm.stack import heartbeat_file

__all__ = ["make_backend", "run_service"]

log = logging.getLogger(__name__)


def make_backend(
    settings: Settings,
    name: str,
    *,
    heartbeat_interval_s: float = 2.0,
    namespace: str = "default",
    kube_url: str | None = None,
) -> ScalingBackend:
    """The backend called ``name``: ``local`` (processes) or ``kubernetes``."""
    if name == "local":
        from streams.swarm.local import LocalBackend

        return LocalBackend(
            heartbeat_interval_s=heartbeat_interval_s,
            log_dir=settings.data_dir / "logs" / "replicas",
        )
    if name == "kubernetes":
        from streams.swarm.kubernetes import KubernetesBackend

        if kube_url:
            return KubernetesBackend(namespace=namespace, host=kube_url)
        return KubernetesBackend.from_kubeconfig(namespace=namespace)
    raise BuildKitError(f'unknown backend "{name}": use local or kubernetes')


def run_service(
    settings: Settings,
    backend: ScalingBackend,
    *,
    interval_s: float = 2.0,
    health: HealthSettings | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the controller until ``stop`` is set (or SIGTERM / Ctrl-C in the main thread)."""
    ensure_swarm_topics(settings)
    controller = SwarmController(settings, backend, interval_s=interval_s, health=health)
    if hasattr(backend, "report"):
        backend.report = controller.report_replica
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    beat = heartbeat_file(settings)
    log.info("SWARM controller running (%s backend)", backend.name)
    try:
        controller.run(stop, after_step=lambda: write_heartbeat(beat))
    except KeyboardInterrupt:
        pass
    finally:
        try:
            controller.close()
        finally:
            backend.close()
            beat.unlink(missing_ok=True)

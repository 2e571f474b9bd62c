"""The SWARM controller as a part of the dev stack: ``buildkit dev up`` starts
``python -m streams.swarm`` after Kafka and the registry. Kept light (no Kafka
client imports): the console script registers it on every start."""

from __future__ import annotations

from pathlib import Path

from buildkit.dev.stack import Part, StackPaths, heartbeat_part
from buildkit.settings import Settings

__all__ = ["heartbeat_file", "stack_part"]


def heartbeat_file(settings: Settings) -> Path:
    """Where the running controller proves it is alive."""
    return settings.data_dir / "run" / "swarm.heartbeat"


def stack_part(settings: Settings, paths: StackPaths) -> Part:
    """The controller as a dev-stack part: alive while its heartbeat file is fresh
    and written by the process the stack started."""
    return heartbeat_part(
        name="swarm",
        module="streams.swarm",
        paths=paths,
        beat=heartbeat_file(settings),
        address=f"{settings.bootstrap_servers} (local backend)",
        setting="BAR_BOOTSTRAP_SERVERS",
        example="127.0.0.1:9092",
        after=("kafka", "schema-registry"),
    )

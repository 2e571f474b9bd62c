"""The SWARM controller as a part of the dev stack: ``buildkit dev up`` starts
``python -m streams.swarm`` after Kafka and the registry. Kept light (no Kafka
client imports): the console script registers it on every start."""

from __future__ import annotations

from pathlib import Path

from buildkit.audit.heartbeat import heartbeat_pid
from buildkit.dev.procs import PidFile
from buildkit.dev.stack import Part, StackPaths, module_part
from buildkit.settings import Settings

__all__ = ["heartbeat_file", "stack_part"]


def heartbeat_file(settings: Settings) -> Path:
    """Where the running controller proves it is alive."""
    return settings.data_dir / "run" / "swarm.heartbeat"


def stack_part(settings: Settings, paths: StackPaths) -> Part:
    """The controller as a dev-stack part: alive while its heartbeat file is fresh
    and written by the process the stack started."""
    name = "swarm"
    pid_file = PidFile(paths.run / f"{name}.pid")  # the one module_part keeps
    beat = heartbeat_file(settings)

    def answers() -> bool:
        pid = pid_file.read()
        return pid is not None and heartbeat_pid(beat) == pid

    return module_part(
        name=name,
        module="streams.swarm",
        paths=paths,
        address=f"{settings.bootstrap_servers} (local backend)",
        setting="BAR_BOOTSTRAP_SERVERS",
        example="127.0.0.1:9092",
        check=answers,
        after=("kafka", "schema-registry"),
    )

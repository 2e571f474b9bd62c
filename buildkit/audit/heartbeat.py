"""The archiver service's heartbeat file: proof of life that ``buildkit dev status`` checks.

Kept free of Kafka and Postgres imports: the dev stack reads it on every status.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from buildkit.settings import Settings

#: How old a heartbeat may be before the archiver counts as not answering.
MAX_AGE_S = 15.0


def heartbeat_path(settings: Settings) -> Path:
    """Where ``python -m buildkit.audit`` writes its heartbeat for these settings."""
    return settings.data_dir / "run" / "audit-archiver.heartbeat"


def write_heartbeat(path: Path) -> None:
    """Record that this process is alive and looping (atomically: never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{os.getpid()} {time.time():.3f}\n")
    os.replace(tmp, path)


def heartbeat_pid(path: Path, max_age_s: float = MAX_AGE_S) -> int | None:
    """The pid that wrote the heartbeat at ``path`` within ``max_age_s`` seconds, else None."""
    try:
        if time.time() - path.stat().st_mtime > max_age_s:
            return None
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None

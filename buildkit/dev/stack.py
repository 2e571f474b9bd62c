"""The embedded dev stack: a list of parts that ``buildkit dev up|down|status`` drives.

A :class:`Part` is a small object — a name, an address, and ``start``, ``stop``,
``pid`` and ``check`` callables. :func:`stack_parts` is the one place that says
what the stack is made of; :class:`Stack` knows nothing about any one part.

Pid files live under ``<BAR_DATA_DIR>/run/``, logs under ``<BAR_DATA_DIR>/logs/``,
Postgres data under ``<BAR_DATA_DIR>/postgres/`` (kept across ``down``/``up``).
A part whose setting points off this machine is *external*: it is never
started or stopped here, only checked.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from buildkit.dev.broker import start_broker
from buildkit.dev.postgres import postgres_pid, start_postgres, stop_postgres
from buildkit.dev.procs import (
    PidFile,
    log_size,
    log_tail,
    port_answers,
    port_is_free,
    wait_until,
)
from buildkit.errors import PortInUse, StackError
from buildkit.settings import Settings, host_port, redact_url

Outcome = Literal["started", "already running", "running", "external", "stopped", "not running"]


@dataclass(frozen=True)
class Part:
    """One process of the stack, and how to start, stop and check it."""

    name: str
    address: str  # printable: credentials masked
    setting: str  # the BAR_* setting that moves it
    example: str  # an example value for that setting, quoted in errors
    start: Callable[[], int]  # start it, wait until it answers, return its pid
    stop: Callable[[], object]  # stop the process this stack started, if any
    pid: Callable[[], int | None]  # pid of our process of it, if one runs
    check: Callable[[], bool]  # does it answer right now?
    host: str | None = None  # the address it binds; None if it listens on none
    port: int | None = None
    log_path: Path | None = None
    after: tuple[str, ...] = ()  # parts that must answer before this one starts
    external: bool = False
    timeout: float = 20.0  # how long an already-running part may take to answer


@dataclass(frozen=True)
class PartState:
    """What ``up``, ``down`` or ``status`` found or did for one part."""

    part: Part
    outcome: Outcome
    pid: int | None
    answering: bool


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps its state under ``BAR_DATA_DIR``."""

    data_dir: Path

    @property
    def run(self) -> Path:
        return self.data_dir / "run"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"


class _DependencyFailed(Exception):
    """A part was not started because a part it needs failed."""


class _NotAnswering(StackError):
    """A part of ours runs but does not answer; it was not started by this ``up``."""


class Stack:
    """Starts, stops and inspects a list of parts; parts start in parallel after their needs."""

    def __init__(self, parts: Sequence[Part]) -> None:
        names = [part.name for part in parts]
        for i, part in enumerate(parts):
            missing = [dep for dep in part.after if dep not in names[:i]]
            if missing:
                raise ValueError(f"part {part.name!r} needs {missing}, which must come before it")
        self.parts = list(parts)

    def status(self) -> list[PartState]:
        """Every part: its pid (if ours runs) and whether it answers."""
        with ThreadPoolExecutor(max_workers=len(self.parts) or 1) as pool:
            return list(pool.map(self._state, self.parts))

    def up(self) -> list[PartState]:
        """Start every local part that is not running; check every external one.

        Ports and external services are checked before anything starts. If a
        part fails, the parts this call started are stopped again.
        """
        self._check_before_start()
        attempted: set[str] = set()
        with ThreadPoolExecutor(max_workers=len(self.parts) or 1) as pool:
            futures: dict[str, Future[PartState]] = {}
            for part in self.parts:
                needs = [futures[dep] for dep in part.after]
                futures[part.name] = pool.submit(self._bring_up, part, needs, attempted)
        failures: list[str] = []
        states: list[PartState] = []
        for part in self.parts:
            try:
                states.append(futures[part.name].result())
            except _DependencyFailed:
                pass
            except Exception as exc:
                failures.append(_failure(part, exc))
        if failures:
            stopped = self._stop(attempted)
            left = f"stopped again: {', '.join(stopped)}" if stopped else "nothing was left running"
            raise StackError("\n".join([*failures, f"({left})"]))
        return states

    def down(self) -> list[PartState]:
        """Stop every process this stack started (by its pid file), last part first."""
        states, problems = [], []
        for part in reversed(self.parts):
            pid = part.pid()
            if pid is not None:
                try:
                    part.stop()
                except StackError as exc:
                    problems.append(f"{part.name} (pid {pid}) did not stop: {exc}")
                    continue
            states.append(PartState(part, "stopped" if pid else "not running", pid, False))
        if problems:
            stopped = [f"{s.part.name} (pid {s.pid})" for s in states if s.outcome == "stopped"]
            problems.append(f"(stopped: {', '.join(stopped) or 'nothing'})")
            raise StackError("\n".join(problems))
        return states[::-1]

    # ------------------------------------------------------------------
    def _state(self, part: Part) -> PartState:
        if part.external:
            return PartState(part, "external", None, part.check())
        pid = part.pid()
        return PartState(part, "running" if pid else "not running", pid, part.check())

    def _check_before_start(self) -> None:
        by_port: dict[tuple[str, int], Part] = {}
        for part in self.parts:
            if part.external or part.host is None or part.port is None:
                continue
            other = by_port.setdefault((part.host, part.port), part)
            if other is not part:
                raise StackError(
                    f"{other.setting} and {part.setting} both use {part.host}:{part.port} — "
                    f"give one of them another port, e.g. {part.setting}={part.example}"
                )
            if part.pid() is None and not port_is_free(part.host, part.port):
                raise PortInUse(part.host, part.port, part.setting, part.example)
        for part in self.parts:
            if part.external and not part.check():
                raise StackError(
                    f"{part.name} at {part.address} does not answer — {part.setting} points off "
                    f"this machine, so it is not started here; start that service, or unset "
                    f"{part.setting} to run the embedded one"
                )

    def _bring_up(
        self, part: Part, needs: list[Future[PartState]], attempted: set[str]
    ) -> PartState:
        for need in needs:
            try:
                need.result()
            except Exception as exc:
                raise _DependencyFailed from exc
        if part.external:
            return PartState(part, "external", None, True)
        pid = part.pid()
        if pid is None:
            attempted.add(part.name)
            return PartState(part, "started", part.start(), True)
        if not wait_until(part.check, part.timeout, interval=0.1):
            raise _NotAnswering(
                f"{part.name} runs (pid {pid}) but does not answer at {part.address} — it may "
                f"have been started with other settings; run: buildkit dev down && buildkit dev up"
            )
        return PartState(part, "already running", pid, True)

    def _stop(self, names: Iterable[str]) -> list[str]:
        """Stop the named parts, last first; the names of those that were running."""
        wanted = set(names)
        stopped = []
        for part in reversed(self.parts):
            if part.name not in wanted:
                continue
            try:
                if part.pid() is not None:
                    part.stop()
                    stopped.append(part.name)
            except Exception as exc:
                stopped.append(f"{part.name} NOT ({exc})")
        return stopped


def _failure(part: Part, exc: Exception) -> str:
    if isinstance(exc, _NotAnswering):
        return str(exc)
    if isinstance(exc, StackError):
        return f"{part.name} failed to start: {exc}"
    tail = log_tail(part.log_path) if part.log_path else ""
    return f"{part.name} failed to start: {type(exc).__name__}: {exc}\n{tail}".rstrip()


# ----------------------------------------------------------------------
# The parts. To add one: write a function returning a Part (module_part does
# most of the work for a `python -m` process) and list it in stack_parts.


PartFactory = Callable[[Settings, StackPaths], Part]

#: Parts the outer packages add (their console script registers them): buildkit never
#: imports streams or agents, so it cannot name their services itself.
_EXTRA_PARTS: list[PartFactory] = []


def register_part(factory: PartFactory) -> None:
    """Add a part to every stack built after this call (once per factory)."""
    if factory not in _EXTRA_PARTS:
        _EXTRA_PARTS.append(factory)


def stack_parts(settings: Settings) -> list[Part]:
    """The parts of the dev stack for these settings, in start order."""
    paths = StackPaths(settings.data_dir.absolute())
    return [
        kafka_part(settings, paths),
        postgres_part(settings, paths),
        registry_part(settings, paths),
        audit_part(settings, paths),
        *(factory(settings, paths) for factory in _EXTRA_PARTS),
    ]


def kafka_part(settings: Settings, paths: StackPaths) -> Part:
    """The Tansu broker on the address of ``BAR_BOOTSTRAP_SERVERS``."""
    host, port = host_port(settings.bootstrap_servers, 9092)
    pid_file = PidFile(paths.run / "tansu.pid")
    log = paths.logs / "tansu.log"
    external = not all(
        is_local(host_port(s, 9092)[0]) for s in settings.bootstrap_servers.split(",")
    )
    return Part(
        name="kafka",
        address=settings.bootstrap_servers,
        setting="BAR_BOOTSTRAP_SERVERS",
        example=f"127.0.0.1:{_other_port(port, 19092)}",
        start=lambda: start_broker(host, port, log, pid_file),
        stop=pid_file.stop,
        pid=pid_file.read,
        check=lambda: port_answers(host, port),
        host=host,
        port=port,
        log_path=log,
        external=external,
    )


def postgres_part(settings: Settings, paths: StackPaths) -> Part:
    """Embedded Postgres + pgvector on the address of ``BAR_DATABASE_URL``."""
    dsn = settings.database_dsn()
    url = urlsplit(dsn)
    host, port = url.hostname, url.port or 5432
    user = unquote(url.username or "postgres")
    database = unquote(url.path.lstrip("/")) or user
    log = paths.logs / "postgres.log"
    example = urlunsplit(url._replace(netloc=f"{user}@127.0.0.1:{_other_port(port, 55433)}"))
    return Part(
        name="postgres",
        address=settings.display_database_url(),
        setting="BAR_DATABASE_URL",
        example=example,
        start=lambda: start_postgres(
            paths.pgdata, host or "127.0.0.1", port, user, database, log_path=log
        ),
        stop=lambda: stop_postgres(paths.pgdata),
        pid=lambda: postgres_pid(paths.pgdata),
        check=lambda: _postgres_answers(dsn),
        host=host,
        port=port,
        log_path=log,
        # No host means a Unix socket: a server of someone else's, not ours to start.
        external=host is None or not is_local(host),
    )


def registry_part(settings: Settings, paths: StackPaths) -> Part:
    """The project's schema registry (``python -m buildkit.registry``), schemas in Postgres."""
    url = settings.schema_registry_url
    host, port = host_port(url, 8081)
    auth = None
    if settings.schema_registry_username is not None:
        password = settings.schema_registry_password
        auth = (settings.schema_registry_username, password.get_secret_value() if password else "")
    ca_location = settings.schema_registry_ca_location
    return module_part(
        name="schema-registry",
        module="buildkit.registry",
        paths=paths,
        address=redact_url(url),
        setting="BAR_SCHEMA_REGISTRY_URL",
        example=f"http://127.0.0.1:{_other_port(port, 18081)}",
        check=lambda: http_answers(url.rstrip("/") + "/", auth=auth, ca_location=ca_location),
        host=host,
        port=port,
        after=("postgres",),
    )


def audit_part(settings: Settings, paths: StackPaths) -> Part:
    """The audit archiver (``python -m buildkit.audit``): every catalog topic into Postgres.

    It listens on nothing; it answers when our process of it wrote its heartbeat lately.
    """
    return heartbeat_part(
        name="audit-archiver",
        module="buildkit.audit",
        paths=paths,
        beat=paths.run / "audit-archiver.heartbeat",
        address=f"{settings.bootstrap_servers} → {settings.display_database_url()}",
        setting="BAR_DATABASE_URL",
        example="postgresql://postgres@127.0.0.1:55433/buildkit",
        after=("kafka", "postgres"),
    )


def heartbeat_part(
    *,
    name: str,
    module: str,
    paths: StackPaths,
    beat: Path,
    address: str,
    setting: str,
    example: str,
    after: tuple[str, ...] = (),
) -> Part:
    """A ``python -m <module>`` part that listens on nothing: it answers while the
    heartbeat file ``beat`` is fresh and was written by the process this stack started
    (:mod:`buildkit.audit.heartbeat`)."""
    from buildkit.audit.heartbeat import heartbeat_pid

    pid_file = PidFile(paths.run / f"{name}.pid")  # the one module_part keeps

    def answers() -> bool:
        pid = pid_file.read()
        return pid is not None and heartbeat_pid(beat) == pid

    return module_part(
        name=name,
        module=module,
        paths=paths,
        address=address,
        setting=setting,
        example=example,
        check=answers,
        after=after,
    )


def module_part(
    *,
    name: str,
    module: str,
    paths: StackPaths,
    address: str,
    setting: str,
    example: str,
    check: Callable[[], bool],
    host: str | None = None,
    port: int | None = None,
    after: tuple[str, ...] = (),
    timeout: float = 20.0,
) -> Part:
    """A part that is ``python -m <module>``, ready once ``check`` is true.

    It reads its settings from the same ``BAR_*`` environment as the CLI.
    """
    pid_file = PidFile(paths.run / f"{name}.pid")
    log = paths.logs / f"{name}.log"
    return Part(
        name=name,
        address=address,
        setting=setting,
        example=example,
        start=lambda: start_module(module, log, pid_file, check, timeout),
        stop=pid_file.stop,
        pid=pid_file.read,
        check=check,
        host=host,
        port=port,
        log_path=log,
        after=after,
        external=host is not None and not is_local(host),
        timeout=timeout,
    )


def start_module(
    module: str, log_path: Path, pid_file: PidFile, ready: Callable[[], bool], timeout: float
) -> int:
    """Run ``python -m module`` in its own session, logging to ``log_path``; wait for ``ready``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    since = log_size(log_path)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=os.environ.copy(),
            start_new_session=True,
        )
    pid_file.write(proc.pid)
    answered = wait_until(lambda: proc.poll() is not None or ready(), timeout, interval=0.1)
    if answered and proc.poll() is None:
        return proc.pid
    if proc.poll() is None:
        pid_file.stop()
        problem = f"did not become ready within {timeout:g}s"
    else:
        pid_file.path.unlink(missing_ok=True)
        problem = f"exited with code {proc.returncode}"
    proc.wait()
    raise StackError(
        f"python -m {module} {problem}; the end of {log_path}:\n{log_tail(log_path, since)}"
    )


# ----------------------------------------------------------------------
# Checks and helpers


def is_local(host: str) -> bool:
    """True for loopback addresses (and names that resolve only to them): ours to start."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def http_answers(
    url: str, auth: tuple[str, str] | None = None, ca_location: str | None = None
) -> bool:
    """True when ``GET url`` answers 200 (TLS verified against ``ca_location`` if given)."""
    import httpx

    try:
        verify = ssl.create_default_context(cafile=ca_location) if ca_location else True
        return httpx.get(url, auth=auth, verify=verify, timeout=2).status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def _postgres_answers(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _other_port(port: int, suggestion: int) -> int:
    """``suggestion``, unless that is the very port in use."""
    return suggestion if suggestion != port else suggestion + 1

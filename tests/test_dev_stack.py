"""``buildkit dev up | down | status`` against real processes, on free ports of each test's own.

Every test runs the real CLI as a subprocess with BAR_DATA_DIR in its own
temporary directory and BAR_* addresses on free ports (never the dev stack's
9092 / 55432 / 8081), and runs ``buildkit dev down`` afterwards so nothing leaks.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from buildkit.dev.postgres import postgres_pid, stop_postgres
from buildkit.dev.procs import PidFile, free_port, pid_alive
from buildkit.dev.stack import is_local

BUILDKIT = str(Path(sys.executable).parent / "buildkit")


# ----------------------------------------------------------------------
# helpers


class DevStack:
    """The environment of one test's stack, and the CLI run against it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.kafka_port = free_port()
        self.pg_port = free_port()
        self.registry_port = free_port()
        self.webhook_port = free_port()
        self.database_url = f"postgresql://postgres@127.0.0.1:{self.pg_port}/buildkit"
        self.env = {
            **os.environ,
            "BAR_DATA_DIR": str(data_dir),
            "BAR_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.kafka_port}",
            "BAR_DATABASE_URL": self.database_url,
            "BAR_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{self.registry_port}",
            "BAR_GITLAB_WEBHOOK_PORT": str(self.webhook_port),
            "COLUMNS": "200",  # rich: keep table cells and lines unwrapped
        }

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """``buildkit <args>``; stdout and stderr together in ``.stdout``."""
        return subprocess.run(
            [BUILDKIT, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self) -> tuple[subprocess.CompletedProcess[str], float]:
        began = time.perf_counter()
        result = self.run("dev", "up")
        return result, time.perf_counter() - began

    def live_pids(self) -> list[int]:
        """Pids of stack processes still running, from the pid files and postmaster.pid."""
        pids = [
            pid for path in (self.data_dir / "run").glob("*.pid") if (pid := PidFile(path).read())
        ]
        pg = postgres_pid(self.data_dir / "postgres")
        return pids + ([pg] if pg else [])

    def cleanup(self) -> None:
        """``down``, then make sure: a leaked server would outlive the test run."""
        self.run("dev", "down")
        for path in (self.data_dir / "run").glob("*.pid"):
            PidFile(path).stop()
        stop_postgres(self.data_dir / "postgres")


def pids_in(output: str) -> dict[str, int]:
    """``{part: pid}`` from the lines of ``up`` / ``down`` output that mention a pid."""
    found = re.findall(
        r"(kafka|postgres|schema-registry|audit-archiver|swarm|gitlab-webhook)\b.*?\(pid (\d+)\)",
        output,
    )
    return {name: int(pid) for name, pid in found}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    dev = DevStack(tmp_path / "bar")
    try:
        yield dev
    finally:
        dev.cleanup()


PARTS = ("kafka", "postgres", "schema-registry", "audit-archiver", "swarm", "gitlab-webhook")


# ----------------------------------------------------------------------
# the whole stack


def test_up_is_idempotent_and_down_stops_every_process(stack: DevStack) -> None:
    first, elapsed = stack.up()
    print(f"\nbuildkit dev up (first run, Postgres initdb included): {elapsed:.2f} s")
    assert first.returncode == 0, first.stdout
    started = pids_in(first.stdout)
    assert set(started) == set(PARTS), first.stdout
    assert first.stdout.count("started (pid") == len(PARTS), first.stdout
    for address in (stack.env["BAR_BOOTSTRAP_SERVERS"], stack.database_url):
        assert address in first.stdout
    assert stack.env["BAR_SCHEMA_REGISTRY_URL"] in first.stdout
    assert all(pid_alive(pid) for pid in started.values())

    status = stack.run("dev", "status")
    assert status.returncode == 0, status.stdout
    assert "all parts answer" in status.stdout
    for pid in started.values():
        assert str(pid) in status.stdout

    again, elapsed = stack.up()
    print(f"buildkit dev up (already running): {elapsed:.2f} s")
    assert again.returncode == 0, again.stdout
    assert again.stdout.count("already running (pid") == len(PARTS), again.stdout
    assert "started (pid" not in again.stdout
    assert pids_in(again.stdout) == started

    down = stack.run("dev", "down")
    assert down.returncode == 0, down.stdout
    assert pids_in(down.stdout) == started
    assert not [pid for pid in started.values() if pid_alive(pid)]
    assert stack.live_pids() == []

    after = stack.run("dev", "status")
    assert after.returncode == 1, after.stdout
    assert "not answering" in after.stdout


def test_postgres_data_survives_down_and_up(stack: DevStack) -> None:
    result, elapsed = stack.up()
    assert result.returncode == 0, result.stdout
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY, v vector(3))")
        conn.execute("INSERT INTO kept VALUES (1, '[1,2,3]')")
    assert stack.run("dev", "down").returncode == 0

    result, elapsed = stack.up()
    print(f"\nbuildkit dev up (Postgres data already there): {elapsed:.2f} s")
    assert result.returncode == 0, result.stdout
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT id, v::text FROM kept").fetchone()
    assert row == (1, "[1,2,3]")


# ----------------------------------------------------------------------
# failures leave nothing running


def test_taken_port_is_named_with_its_setting_and_nothing_starts(stack: DevStack) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.kafka_port))
        squatter.listen()
        result, _ = stack.up()

    assert result.returncode != 0
    assert str(stack.kafka_port) in result.stdout
    assert "BAR_BOOTSTRAP_SERVERS" in result.stdout
    assert "Traceback" not in result.stdout
    assert stack.live_pids() == []
    assert not (stack.data_dir / "postgres" / "PG_VERSION").exists()


def test_a_part_that_fails_to_start_is_named_and_the_others_are_stopped(
    stack: DevStack,
) -> None:
    # A data directory that claims to be initialised but has no configuration:
    # pg_ctl cannot start it, while the broker (started in parallel) can.
    pgdata = stack.data_dir / "postgres"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("18\n")

    result, _ = stack.up()

    assert result.returncode != 0, result.stdout
    assert "postgres failed to start" in result.stdout
    assert "stopped again: kafka" in result.stdout
    assert "Traceback" not in result.stdout
    assert stack.live_pids() == []
    assert not (stack.data_dir / "run" / "schema-registry.pid").exists()
    assert not (stack.data_dir / "run" / "audit-archiver.pid").exists()


def test_down_when_nothing_runs_says_so_and_succeeds(stack: DevStack) -> None:
    result = stack.run("dev", "down")

    assert result.returncode == 0, result.stdout
    assert "nothing to stop" in result.stdout
    assert "the dev stack is not running" in result.stdout


def test_status_exits_1_when_nothing_answers(stack: DevStack) -> None:
    result = stack.run("dev", "status")

    assert result.returncode == 1, result.stdout
    for part in PARTS:
        assert part in result.stdout
    assert (
        "not answering: kafka, postgres, schema-registry, audit-archiver, swarm, gitlab-webhook"
        in result.stdout
    )


# ----------------------------------------------------------------------
# external services: checked, never started


def test_unreachable_external_service_fails_up_before_anything_starts(stack: DevStack) -> None:
    # .invalid never resolves (RFC 6761): a host off this machine that does not answer.
    stack.env["BAR_SCHEMA_REGISTRY_URL"] = "http://registry.invalid:8081"

    result, _ = stack.up()

    assert result.returncode != 0
    assert "BAR_SCHEMA_REGISTRY_URL" in result.stdout
    assert "does not answer" in result.stdout
    assert stack.live_pids() == []

    status = stack.run("dev", "status")
    assert status.returncode == 1
    assert re.search(r"schema-registry .*external", status.stdout), status.stdout


def test_credentials_in_the_database_url_are_never_printed(stack: DevStack) -> None:
    stack.env["BAR_DATABASE_URL"] = (
        f"postgresql://postgres:s3cret-pw@127.0.0.1:{stack.pg_port}/buildkit"
    )

    status = stack.run("dev", "status")

    assert "s3cret-pw" not in status.stdout
    assert f"postgres:***@127.0.0.1:{stack.pg_port}" in status.stdout


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("10.1.2.3", False),
        ("kafka.invalid", False),
    ],
)
def test_only_loopback_hosts_are_started_here(host: str, local: bool) -> None:
    assert is_local(host) is local

"""Session-wide real services: the Tansu broker, embedded Postgres and the schema registry.

Started once per test session on free ports of their own (never the dev
stack's), with data in a temporary directory. A service that fails to start
fails the run loudly; nothing is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildkit.dev.broker import start_broker
from buildkit.dev.postgres import start_postgres, stop_postgres
from buildkit.dev.procs import PidFile, free_port, port_answers, wait_until
from buildkit.settings import Settings


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bar")


@pytest.fixture(scope="session")
def broker(session_dir: Path) -> Iterator[str]:
    """Bootstrap address of a Tansu broker started for this session."""
    port = free_port()
    pid_file = PidFile(session_dir / "tansu.pid")
    start_broker("127.0.0.1", port, session_dir / "tansu.log", pid_file)
    yield f"127.0.0.1:{port}"
    pid_file.stop()


@pytest.fixture(scope="session")
def database_url(session_dir: Path) -> Iterator[str]:
    """URL of an embedded Postgres (with pgvector) started for this session."""
    port = free_port()
    pgdata = session_dir / "pgdata"
    start_postgres(pgdata, "127.0.0.1", port, "postgres", "buildkit")
    yield f"postgresql://postgres@127.0.0.1:{port}/buildkit"
    stop_postgres(pgdata)


@pytest.fixture(scope="session")
def registry_url(session_dir: Path, database_url: str) -> Iterator[str]:
    """URL of the project's schema registry server, run as a real subprocess."""
    port = free_port()
    env = {
        **os.environ,
        "BAR_DATABASE_URL": database_url,
        "BAR_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{port}",
    }
    log = (session_dir / "registry.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "buildkit.registry"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    if not wait_until(lambda: port_answers("127.0.0.1", port) or proc.poll() is not None, 20):
        proc.kill()
    if proc.poll() is not None:
        raise RuntimeError((session_dir / "registry.log").read_text())
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def settings(broker: str, database_url: str, registry_url: str, session_dir: Path) -> Settings:
    """Settings pointing at this session's real services."""
    return Settings(
        bootstrap_servers=broker,
        database_url=database_url,  # type: ignore[arg-type]
        schema_registry_url=registry_url,
        data_dir=session_dir / "data",
        client_timeout_s=5,
        consumer_session_timeout_ms=6000,
        # Never the default 8090: a developer's own dev stack may hold it.
        gitlab_webhook_port=free_port(),
    )


@pytest.fixture
def prefix() -> str:
    """A topic / group prefix of this test's own, so tests never share state."""
    return f"t-{uuid.uuid4().hex[:8]}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The BAR_* environment that makes a subprocess use ``settings``."""
    return {
        **os.environ,
        "BAR_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "BAR_DATABASE_URL": settings.database_dsn(),
        "BAR_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "BAR_DATA_DIR": str(settings.data_dir),
        "BAR_CLIENT_TIMEOUT_S": str(settings.client_timeout_s),
        "BAR_CONSUMER_SESSION_TIMEOUT_MS": str(settings.consumer_session_timeout_ms),
        "BAR_GITLAB_WEBHOOK_PORT": str(settings.gitlab_webhook_port),
        "COLUMNS": "200",
    }


BUILDKIT = str(Path(sys.executable).parent / "buildkit")


@pytest.fixture
def cli(settings: Settings):  # type: ignore[no-untyped-def]
    """Run the real ``buildkit`` console script against this session's services."""

    def run(
        *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
    ):
        return subprocess.run(
            [BUILDKIT, *args],
            input=input,
            capture_output=True,
            text=True,
            env={**settings_env(settings), **(env or {})},
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def gitlab_webhook(settings: Settings) -> Iterator[str]:
    """The GitLab webhook connector as the dev stack runs it (``python -m
    connectors.gitlab``, a real subprocess, token: the dev secret under the session's
    data dir), publishing to the session broker's ``bar.gitlab.events``; yields its URL."""
    from buildkit.catalog import default_catalog
    from buildkit.topics import apply_topics
    from connectors.gitlab.stack import local_base_url, webhook_url
    from tests.connectors.gitlab.webhook_helpers import start_webhook, wait_healthy

    apply_topics(settings, default_catalog())
    log_path = settings.data_dir / "gitlab-webhook.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:  # the child keeps its own handle
        proc = start_webhook(["-m", "connectors.gitlab"], settings_env(settings), log=log)
    wait_healthy(proc, local_base_url(settings), log_path=log_path)
    yield webhook_url(settings)
    proc.terminate()
    proc.wait(10)

"""The services a bench run needs: Tansu, embedded Postgres and the schema registry.

Started once for the whole run on free ports of their own (never the dev
stack's 9092 / 55432 / 8081, so a running ``buildkit dev up`` is untouched),
with data in a temporary directory, and stopped at the end — also when a
benchmark fails. The same approach as ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from buildkit.catalog import Catalog, TopicSpec
from buildkit.contracts.base import Event
from buildkit.dev.broker import start_broker
from buildkit.dev.postgres import start_postgres, stop_postgres
from buildkit.dev.procs import PidFile, free_port, port_answers, wait_until
from buildkit.settings import Settings
from buildkit.topics import apply_topics


@contextlib.contextmanager
def bench_stack(keep_dir: bool = False) -> Iterator[Settings]:
    """Settings pointing at freshly started services; everything stops on exit."""
    base = Path(tempfile.mkdtemp(prefix="bar-bench-"))
    with contextlib.ExitStack() as stack:
        if not keep_dir:
            # Registered first, so it runs last: after every service stopped.
            stack.callback(_remove_tree, base)
        broker = stack.enter_context(_broker(base))
        database_url = stack.enter_context(_postgres(base))
        registry_url = stack.enter_context(_registry(base, database_url))
        yield Settings(
            bootstrap_servers=broker,
            database_url=database_url,
            schema_registry_url=registry_url,
            data_dir=base / "data",
            client_timeout_s=10,
            consumer_session_timeout_ms=6000,
        )


@contextlib.contextmanager
def _broker(base: Path) -> Iterator[str]:
    port = free_port()
    pid_file = PidFile(base / "tansu.pid")
    start_broker("127.0.0.1", port, base / "tansu.log", pid_file)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        pid_file.stop()


@contextlib.contextmanager
def _postgres(base: Path) -> Iterator[str]:
    port = free_port()
    pgdata = base / "pgdata"
    start_postgres(pgdata, "127.0.0.1", port, "postgres", "buildkit")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/buildkit"
    finally:
        stop_postgres(pgdata)


@contextlib.contextmanager
def _registry(base: Path, database_url: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "BAR_DATABASE_URL": database_url,
        "BAR_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{port}",
    }
    log_path = base / "registry.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "buildkit.registry"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        if not wait_until(lambda: port_answers("127.0.0.1", port) or proc.poll() is not None, 30):
            raise RuntimeError(f"schema registry did not answer on port {port} within 30s")
        if proc.poll() is not None:
            raise RuntimeError(f"schema registry exited:\n{log_path.read_text()[-2000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _remove_tree(path: Path) -> None:
    import shutil

    # Postgres may have chowned pgdata to its service user when run as root.
    shutil.rmtree(path, ignore_errors=True)


def fresh_topic(settings: Settings, area: str, value_type: type[Event], partitions: int = 1) -> str:
    """Create a new single-use topic ``bench.<area>.<random>`` for ``value_type``."""
    name = f"bench.{area}.{uuid.uuid4().hex[:8]}"
    apply_topics(settings, Catalog([TopicSpec(name, value_type, partitions=partitions)]))
    return name


def bench_catalog(*topics: str, value_type: type[Event]) -> Catalog:
    """A catalog of the bench topics (TypedProducer/SerdeRegistry only know catalog topics)."""
    return Catalog([TopicSpec(t, value_type, partitions=1) for t in topics])


def delete_topics(settings: Settings, topics: list[str]) -> None:
    """Best-effort cleanup: Tansu keeps topics in memory, so drop the big ones."""
    from buildkit.kafka import admin_client

    if not topics:
        return
    with contextlib.suppress(Exception):
        futures = admin_client(settings).delete_topics(topics, operation_timeout=10)
        for future in futures.values():
            with contextlib.suppress(Exception):
                future.result()

"""Running the webhook app for real (uvicorn on a free port) and reading what it published."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import uvicorn
from confluent_kafka import Consumer, TopicPartition
from fastapi import FastAPI

from buildkit.catalog import Catalog, TopicSpec
from buildkit.contracts import GitLabEvent
from buildkit.dev.procs import free_port, wait_until
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from buildkit.topics import apply_topics

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_body(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def events_topic(settings: Settings, name: str, partitions: int = 3) -> Catalog:
    """A catalog of one GitLabEvent topic ``name``, keyed by project id, created on the broker."""
    catalog = Catalog([TopicSpec(name, GitLabEvent, partitions=partitions, key_field="project_id")])
    apply_topics(settings, catalog)
    return catalog


def start_webhook(
    args: list[str], env: dict[str, str], *, log: IO[bytes] | None = None
) -> subprocess.Popen[str]:
    """``python ARGS`` (a webhook server, e.g. ``-m connectors.gitlab``) as a subprocess,
    its output to ``log`` (the caller may close its handle) or else to a pipe."""
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        stdout=subprocess.PIPE if log is None else log,
        stderr=subprocess.STDOUT,
        text=log is None,
    )


def wait_healthy(
    proc: subprocess.Popen[str], base: str, *, log_path: Path | None = None, timeout: float = 30
) -> None:
    """Wait until ``base``/healthz answers 200; if the process exits first or it does not
    answer within ``timeout``, kill it, wait for it and raise RuntimeError with its output
    (from ``log_path`` when it writes there, else its pipe)."""

    def healthy() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    if wait_until(healthy, timeout, interval=0.2) and proc.poll() is None:
        return
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if log_path is not None:
        output = log_path.read_text(errors="replace")
    else:
        output = proc.stdout.read() if proc.stdout is not None else ""
    raise RuntimeError(f"the webhook at {base} did not become healthy:\n{output}")


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn on a free loopback port (its own thread and loop);
    yields the base URL, stops it (lifespan shutdown included) on exit."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 30)
    assert server.started, "the webhook app did not start (see the log above)"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive(), "the webhook app did not stop"


@dataclass(frozen=True)
class Published:
    key: str | None
    event: GitLabEvent
    headers: dict[str, bytes]


def read_events(settings: Settings, catalog: Catalog, topic: str) -> list[Published]:
    """Every record on ``topic`` (all partitions, up to their end), decoded."""
    serde = SerdeRegistry(settings, catalog).for_topic(topic)
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": "webhook-test-reader",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
                "log_level": 0,
            }
        )
    )
    partitions = len(consumer.list_topics(topic, timeout=5).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found: list[Published] = []
    eofs: set[int] = set()
    try:
        while len(eofs) < partitions:
            msg = consumer.poll(5)
            assert msg is not None, f"timed out reading {topic}: {len(found)} records"
            if msg.error():
                eofs.add(msg.partition() or 0)
                continue
            event = serde.decode(msg.value())
            assert isinstance(event, GitLabEvent)
            key = msg.key()
            found.append(
                Published(
                    None if key is None else key.decode(),
                    event,
                    {str(k): bytes(v) for k, v in (msg.headers() or []) if v is not None},
                )
            )
    finally:
        consumer.close()
    return found

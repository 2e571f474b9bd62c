"""Faults a user meets: services down, and a consumer killed mid-batch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from buildkit.catalog import Catalog, TopicSpec, default_catalog
from buildkit.contracts.events import AgentTask
from buildkit.dev.procs import free_port
from buildkit.producer import TypedProducer
from buildkit.topics import apply_topics
from tests.conftest import settings_env
from tests.helpers.events import task

VALID_RESULT = json.dumps(
    {
        "task_id": "x",
        "agent": "a",
        "status": "FAILED",
        "started_at": "2026-11-25T10:00:00Z",
        "finished_at": "2026-11-25T10:00:01Z",
    }
)


def test_every_command_fails_fast_and_clearly_when_the_broker_is_down(cli):
    dead = f"127.0.0.1:{free_port()}"
    commands = [
        ("topics", "apply"),
        ("topics", "list"),
        ("topics", "describe", "bar.tasks.results"),
        ("produce", "bar.tasks.results"),
        ("consume", "bar.tasks.results", "--from-beginning"),
        ("replay", "bar.tasks.results", "--out", "-"),
    ]

    def run(args: tuple[str, ...]) -> tuple[tuple[str, ...], float, subprocess.CompletedProcess]:
        started = time.monotonic()
        done = cli(
            *args,
            input=VALID_RESULT,
            env={"BAR_BOOTSTRAP_SERVERS": dead, "BAR_CLIENT_TIMEOUT_S": "6"},
        )
        return args, time.monotonic() - started, done

    with ThreadPoolExecutor(len(commands)) as pool:
        outcomes = list(pool.map(run, commands))
    for args, seconds, done in outcomes:
        assert done.returncode != 0, args
        assert f"cannot reach Kafka at {dead}" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr, args
        assert seconds < 10, (args, seconds)


def test_registry_down_is_named_and_nothing_is_sent(cli, settings):
    apply_topics(settings, default_catalog())
    url = f"http://127.0.0.1:{free_port()}"
    done = cli(
        "produce", "bar.tasks.results", input=VALID_RESULT, env={"BAR_SCHEMA_REGISTRY_URL": url}
    )
    assert done.returncode == 3
    assert f"cannot reach the schema registry at {url}" in done.stderr
    assert "Traceback" not in done.stderr


def test_postgres_down_is_named_with_password_masked(cli):
    url = f"postgresql://bar:s3cret@127.0.0.1:{free_port()}/buildkit"
    done = cli("audit", "verify", env={"BAR_DATABASE_URL": url})
    assert done.returncode != 0
    assert "cannot reach Postgres at postgresql://bar:***@127.0.0.1" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_consumer_killed_mid_batch_loses_nothing(settings, prefix, tmp_path):
    topic = f"{prefix}.crash"
    catalog = Catalog([TopicSpec(topic, AgentTask, partitions=3)])
    apply_topics(settings, catalog)
    total = 300
    with TypedProducer(settings, catalog=catalog) as producer:
        for n in range(total):
            producer.produce(topic, task(n, prefix), key=f"k{n}")
    out = tmp_path / "handled.txt"
    helper = Path(__file__).parent / "helpers" / "consume_to_file.py"
    group = f"{prefix}-crash"
    env = settings_env(settings)
    env["PYTHONPATH"] = str(Path(__file__).parent.parent)

    def start(delay: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(helper), topic, group, str(out), delay], env=env
        )

    proc = start("0.01")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        not out.exists() or len(out.read_text().splitlines()) < 80
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    handled_before = len(out.read_text().splitlines())
    assert 80 <= handled_before < total, "the kill must land mid-stream"
    proc = start("0")
    assert proc.wait(90) == 0
    lines = out.read_text().splitlines()
    seen = {tuple(map(int, line.split(":"))) for line in lines}
    expected = total
    assert len(seen) == expected, f"{expected - len(seen)} record(s) never processed"
    # At-least-once: the uncommitted part of the killed batch was processed again.
    assert len(lines) >= expected

"""``buildkit agents list | describe | deploy`` through the real console script."""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agents.deploy import SWARM_COMMANDS_TOPIC
from buildkit.catalog import AGENT_TASK_PARTITIONS, Catalog, default_catalog
from buildkit.contracts.swarm import SwarmCommand, SwarmCommandKind
from buildkit.dev.procs import free_port
from buildkit.kafka import admin_client
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from buildkit.topics import apply_topics


def test_list_shows_every_manifest_and_describe_one(cli):
    listed = cli("agents", "list")
    assert listed.returncode == 0, listed.stderr
    for name in ("tdd-enforcer", "metrics-collector", "quality-gate-enforcer"):
        assert name in listed.stdout
    described = cli("agents", "describe", "performance-monitor")
    assert described.returncode == 0, described.stderr
    assert "bar-agent-performance-monitor" in described.stdout
    assert "threshold       p99: 1000 ms" in described.stdout


def test_unknown_agent_suggests_the_closest_name(cli):
    done = cli("agents", "describe", "perf-monitor")
    assert done.returncode == 1
    assert "did you mean performance-monitor" in done.stderr
    assert "Traceback" not in done.stderr


# -- deploy -----------------------------------------------------------------------------


def _commands_for(settings: Settings, agent_type: str, expect: int = 1) -> list[SwarmCommand]:
    """The SwarmCommands keyed ``agent_type`` on bar.swarm.commands, read by assignment."""
    serde = SerdeRegistry(settings, default_catalog()).for_topic(SWARM_COMMANDS_TOPIC)
    consumer = Consumer(settings.kafka_config(**{"group.id": "unused", "log_level": 0}))
    consumer.assign([TopicPartition(SWARM_COMMANDS_TOPIC, 0, OFFSET_BEGINNING)])
    found: list[SwarmCommand] = []
    deadline = time.monotonic() + 20
    try:
        # Other tests' commands share the topic: keep ours, stop once they are all here.
        while len(found) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None or msg.key() != agent_type.encode():
                continue
            command = serde.decode(msg.value())
            assert isinstance(command, SwarmCommand)
            assert dict(msg.headers() or [])["ce_id"].decode() == command.command_id
            found.append(command)
    finally:
        consumer.close()
    return found


@pytest.fixture
def swarm_commands_topic(settings: Settings) -> None:
    apply_topics(settings, Catalog([default_catalog().get(SWARM_COMMANDS_TOPIC)]))


def _scaffold(cli, tmp_path: Path, name: str) -> Path:
    done = cli("agents", "create", "--type", "worker", "--name", name, "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    return tmp_path / name / "manifest.yaml"


@pytest.mark.stack
def test_deploy_creates_the_task_topic_and_publishes_a_deploy_command(
    cli, settings: Settings, prefix: str, tmp_path: Path, swarm_commands_topic: None
) -> None:
    name = f"{prefix}-counter"
    manifest = _scaffold(cli, tmp_path, name)
    before = datetime.now(UTC) - timedelta(seconds=1)
    # A relative --manifest: the command carries the absolute path.
    relative = os.path.relpath(manifest)
    done = cli("agents", "deploy", "--agent-id", name, "--manifest", relative, "--replicas", "2")
    assert done.returncode == 0, done.stderr
    assert f"bar.tasks.{name} (created)" in done.stdout
    assert "buildkit swarm health --all" in done.stdout

    (command,) = _commands_for(settings, name)
    assert command.kind is SwarmCommandKind.DEPLOY
    assert command.agent_type == name
    assert command.replicas == 2
    assert command.manifest_path == str(manifest.resolve())
    assert command.requested_by == f"{getpass.getuser()}@{socket.gethostname()}"
    assert str(uuid.UUID(command.command_id)) == command.command_id
    assert command.command_id in done.stdout
    assert before <= command.at <= datetime.now(UTC)

    admin = admin_client(settings)
    topic = admin.list_topics(f"bar.tasks.{name}", timeout=5).topics[f"bar.tasks.{name}"]
    assert len(topic.partitions) == AGENT_TASK_PARTITIONS

    # Again, without --replicas: SWARM's policy decides; the topic is already there.
    again = cli("agents", "deploy", "--agent-id", name, "--manifest", str(manifest))
    assert again.returncode == 0, again.stderr
    assert f"bar.tasks.{name} (exists)" in again.stdout
    first, second = _commands_for(settings, name, expect=2)
    assert first == command
    assert second.replicas is None
    assert second.command_id != command.command_id


def test_deploy_of_an_unknown_agent_lists_close_names(cli) -> None:
    done = cli("agents", "deploy", "--agent-id", "tdd-enforcr")
    assert done.returncode == 1
    assert 'no shipped agent manifest named "tdd-enforcr"' in done.stderr
    assert "did you mean tdd-enforcer" in done.stderr
    assert "--manifest PATH" in done.stderr
    assert "Traceback" not in done.stderr


def test_deploy_refuses_a_manifest_of_another_agent(cli, prefix: str, tmp_path: Path) -> None:
    manifest = _scaffold(cli, tmp_path, f"{prefix}-counter")
    done = cli("agents", "deploy", "--agent-id", f"{prefix}-other", "--manifest", str(manifest))
    assert done.returncode == 1
    assert f'--agent-id "{prefix}-other" does not match the name "{prefix}-counter"' in done.stderr
    assert str(manifest.resolve()) in done.stderr


def test_deploy_of_an_invalid_manifest_names_file_and_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text("manifest:\n  name: broken\n  type: wizard\n")
    done = cli("agents", "deploy", "--agent-id", "broken", "--manifest", str(path))
    assert done.returncode == 1
    assert f'{path}:3:9: field "type": must be one of' in done.stderr


def test_deploy_out_of_range_replicas_is_refused_before_kafka(cli) -> None:
    done = cli("agents", "deploy", "--agent-id", "tdd-enforcer", "--replicas", "0")
    assert done.returncode == 1
    assert f"use 1 to {AGENT_TASK_PARTITIONS}" in done.stderr


def test_deploy_with_the_broker_down_says_so(cli, prefix: str, tmp_path: Path) -> None:
    manifest = _scaffold(cli, tmp_path, f"{prefix}-counter")
    done = cli(
        "agents", "deploy", "--agent-id", f"{prefix}-counter", "--manifest", str(manifest),
        env={"BAR_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "BAR_CLIENT_TIMEOUT_S": "1"},
    )  # fmt: skip
    assert done.returncode == 3
    assert "cannot reach Kafka" in done.stderr
    assert "buildkit dev up" in done.stderr
    assert "Traceback" not in done.stderr

"""The operator's path end to end, through the real console script and processes:
scaffold an agent, deploy it to a running SWARM service, scale it, see its health and
metrics, stop the service."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from buildkit.catalog import default_catalog
from buildkit.contracts.events import AgentHeartbeat, ReplicaState
from buildkit.producer import TypedProducer
from buildkit.topics import apply_topics
from tests.conftest import settings_env
from tests.swarm.helpers import send_tasks, wait_for

pytestmark = pytest.mark.stack


def healthy(cli, agent: str) -> list[dict]:  # type: ignore[no-untyped-def]
    shown = cli("swarm", "health", "--agent-type", agent, "--health-interval", "1", "--json")
    rows = [json.loads(line) for line in shown.stdout.splitlines() if line.startswith("{")]
    return [r for r in rows if r["status"] == "healthy"]


@pytest.mark.timeout(300)
def test_deploy_scale_health_metrics_through_the_cli(settings, prefix, cli, tmp_path: Path):
    env = {**settings_env(settings), "BAR_DATA_DIR": str(tmp_path / "data")}
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.swarm",
            "--interval",
            "0.5",
            "--health-interval",
            "1",
        ],
        env=env,
        stdout=(tmp_path / "swarm.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    agent = f"{prefix}-words"
    try:
        created = cli(
            "agents", "create", "--type", "worker", "--name", agent, "--dir", str(tmp_path)
        )
        assert created.returncode == 0, created.stderr
        manifest = tmp_path / agent / "manifest.yaml"
        deployed = cli(
            "agents", "deploy", "--agent-id", agent, "--manifest", str(manifest), "--replicas", "2"
        )
        assert deployed.returncode == 0, deployed.stderr

        assert wait_for(lambda: len(healthy(cli, agent)) == 2, 90, interval=1), (
            tmp_path / "swarm.log"
        ).read_text()[-3000:]

        scaled = cli("swarm", "scale", "--agent-type", agent, "--replicas", "3")
        assert scaled.returncode == 0, scaled.stderr
        assert "3 replica(s)" in scaled.stdout
        assert wait_for(lambda: len(healthy(cli, agent)) == 3, 60, interval=1)

        task_ids = [f"{prefix}-{n}" for n in range(12)]
        send_tasks(
            settings,
            agent,
            [(t, {"text": f"count these {n} words"}) for n, t in enumerate(task_ids)],
        )
        send_tasks(settings, agent, [(f"{prefix}-bad", {"no": "text"})])

        def metrics() -> dict:
            shown = cli("swarm", "metrics", "--agent-type", agent, "--period", "1h", "--json")
            assert shown.returncode == 0, shown.stderr
            (row,) = json.loads(shown.stdout)
            return row

        assert wait_for(lambda: metrics()["tasks"] == 13, 60, interval=1)
        row = metrics()
        assert row["tasks_succeeded"] == 12 and row["tasks_failed"] == 1
        assert row["replicas_seen"] >= 3
        assert row["replica_events"].get("STARTED", 0) >= 3
        # --agent-type may name a kind: every worker, ours included (from its registration).
        workers = cli("swarm", "metrics", "--agent-type", "worker", "--period", "1h", "--json")
        by_type = {m["agent_type"]: m for m in json.loads(workers.stdout)}
        assert {"test-generator", "api-builder", agent} <= set(by_type)
        assert by_type[agent]["tasks"] == 13

        # --all: every agent type; other tests' replicas may be there too.
        everything = cli("swarm", "health", "--all", "--health-interval", "1", "--json")
        ours = [json.loads(x) for x in everything.stdout.splitlines() if agent in x]
        assert len(ours) == 3 and {r["status"] for r in ours} == {"healthy"}, everything
    finally:
        service.send_signal(signal.SIGTERM)
        code = service.wait(60)
    assert code == 0, (tmp_path / "swarm.log").read_text()[-3000:]
    # The service stopped its replicas cleanly: no process of ours left, all deregistered.
    assert wait_for(lambda: healthy(cli, agent) == [], 30, interval=1)
    stopped = cli(
        "swarm", "health", "--agent-type", agent, "--include-stopped", "--json"
    ).stdout.splitlines()
    assert {json.loads(line)["status"] for line in stopped} == {"stopped"}
    alive = subprocess.run(["pgrep", "-f", f"--name {agent}"], capture_output=True, text=True)
    assert alive.stdout.strip() == "" or all(
        not Path(f"/proc/{pid}").exists() for pid in alive.stdout.split()
    ), alive.stdout


def test_scale_and_health_errors_are_clear(cli, prefix):
    nothing = cli("swarm", "health")
    assert nothing.returncode != 0
    assert "--all or --agent-type" in nothing.stderr

    negative = cli("swarm", "scale", "--agent-type", "x", "--replicas", "-1")
    assert negative.returncode != 0

    period = cli("swarm", "metrics", "--agent-type", f"{prefix}-x", "--period", "soon")
    assert period.returncode != 0
    assert "soon" in period.stderr


def test_health_exits_1_for_a_silent_replica_and_calls_a_long_silent_one_lost(
    settings, prefix, cli
):
    apply_topics(settings, default_catalog())
    now = datetime.now(UTC)
    ghost = f"{prefix}-ghost"
    with TypedProducer(settings) as producer:
        for replica, silent_s in (("silent", 5), ("gone", 120)):
            producer.produce(
                "bar.agents.heartbeats",
                AgentHeartbeat(
                    agent=ghost,
                    replica_id=f"{ghost}-{replica}",
                    state=ReplicaState.IDLE,
                    sent_at=now - timedelta(seconds=silent_s),
                ),
                key=f"{ghost}-{replica}",
            )

    shown = cli("swarm", "health", "--agent-type", ghost, "--health-interval", "1", "--json")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(r["replica_id"], r["status"]) for r in rows] == [(f"{ghost}-silent", "unhealthy")]

    every = cli(
        "swarm",
        "health",
        "--agent-type",
        ghost,
        "--health-interval",
        "1",
        "--include-stopped",
        "--json",
    )
    statuses = {
        json.loads(x)["replica_id"]: json.loads(x)["status"] for x in every.stdout.splitlines()
    }
    assert statuses == {f"{ghost}-silent": "unhealthy", f"{ghost}-gone": "lost"}

    patient = cli("swarm", "health", "--agent-type", ghost, "--health-interval", "60")
    assert patient.returncode == 0, patient.stdout  # 2 minutes silent is fine at 3 x 60 s
    assert "2 healthy" in patient.stdout

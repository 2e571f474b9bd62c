"""``buildkit roe workflows`` and the ``Roe`` API against a running engine and agents.

One engine and one set of stand-in agents serve the whole module; every test starts
runs of its own (fresh request ids), so tests share nothing but the processes.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildkit.catalog import default_catalog
from buildkit.topics import apply_topics
from streams.roe.api import Roe, TaskCompleted
from streams.roe.engine import RoeEngine
from tests.roe.agents import StandInAgents, running, wait_for

TWO_STEP = """\
name: CLI two step
version: 1.0.0
inputs: [issueId]
stages:
  - name: design
    agent: tdd-enforcer
    outputs: [spec.yaml]
  - name: build
    agent: doc-sync
    dependencies: [design]
    inputs: [spec.yaml]
"""

HANGS = """\
name: CLI hangs
version: 1.0.0
stages:
  - name: never-answered
    agent: tdd-enforcer
"""

BAD = """\
name: CLI bad
version: 1.0.0
stages:
  - name: first
    agent: tdd-enforcer
    dependencies: [nowhere]
"""


@pytest.fixture(scope="module")
def engine(settings) -> Iterator[RoeEngine]:
    apply_topics(settings, default_catalog())
    agents = StandInAgents(settings, ["tdd-enforcer", "doc-sync"])
    agents.silent.add("never-answered")
    with running(settings, agents) as engine:
        yield engine


@pytest.fixture(scope="module")
def workflows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("workflows")
    files = {"two-step": TWO_STEP, "hangs": HANGS, "bad": BAD}
    for name, text in files.items():
        (folder / f"{name}.yml").write_text(text)
    return {name: folder / f"{name}.yml" for name in files}


def create(cli, path: Path) -> str:  # type: ignore[no-untyped-def]
    done = cli("roe", "workflows", "create", str(path))
    assert done.returncode == 0, done.stderr
    return str(done.stdout.strip())


def execute(cli, workflow_id: str, *inputs: str) -> str:  # type: ignore[no-untyped-def]
    args = [a for pair in inputs for a in ("--input", pair)]
    done = cli("roe", "workflows", "execute", "--workflow-id", workflow_id, *args)
    assert done.returncode == 0, done.stderr
    return str(done.stdout.strip())


def test_create_records_the_workflow_and_list_shows_it_beside_the_builtin(cli, workflows):
    assert create(cli, workflows["two-step"]) == "cli-two-step@1.0.0"

    listed = cli("roe", "workflows", "list")

    assert listed.returncode == 0, listed.stderr
    assert "cli-two-step@1.0.0" in listed.stdout
    assert "feature-development-workflow@0.1.0" in listed.stdout


def test_create_of_an_invalid_file_prints_file_line_column_and_exits_1(cli, workflows):
    done = cli("roe", "workflows", "create", str(workflows["bad"]))

    assert done.returncode == 1
    assert f"{workflows['bad']}:6:" in done.stderr
    assert "nowhere" in done.stderr


def test_executed_run_succeeds_and_status_and_history_show_it(cli, engine, workflows):
    workflow_id = create(cli, workflows["two-step"])
    run_id = execute(cli, workflow_id, "issueId=42")

    watched = cli("roe", "workflows", "status", "--run-id", run_id, "--watch")
    status = cli("roe", "workflows", "status", "--run-id", run_id)
    history = cli("roe", "workflows", "history", run_id)

    assert watched.returncode == 0, watched.stderr
    assert status.returncode == 0, status.stderr
    assert "SUCCEEDED" in status.stdout
    for stage in ("design", "build"):
        assert f"{run_id}.{stage}.1" in status.stdout
    assert history.returncode == 0, history.stderr
    kinds = re.findall(r"\b(?:WORKFLOW|STAGE)_[A-Z_]+\b", history.stdout)
    assert kinds[0] == "WORKFLOW_STARTED" and kinds[-1] == "WORKFLOW_SUCCEEDED"
    assert kinds.count("STAGE_SUCCEEDED") == 2
    by_workflow = cli("roe", "workflows", "status", "--workflow-id", workflow_id)
    assert run_id in by_workflow.stdout


def test_execute_without_a_required_input_sends_nothing_and_exits_1(cli, workflows):
    workflow_id = create(cli, workflows["two-step"])

    done = cli("roe", "workflows", "execute", "--workflow-id", workflow_id)

    assert done.returncode == 1
    assert "issueId" in done.stderr


def test_cancel_stops_a_run_whose_agent_never_answers(cli, engine, workflows):
    run_id = execute(cli, create(cli, workflows["hangs"]))
    assert wait_for(
        lambda: (
            run_id in engine.runs
            and engine.runs[run_id].stage("never-answered").status.value == "DISPATCHED"
        ),
        30,
    )

    cancelled = cli("roe", "workflows", "cancel", run_id, "--reason", "test gave up")

    assert cancelled.returncode == 0, cancelled.stderr
    assert wait_for(lambda: engine.runs[run_id].done, 30)
    status = cli("roe", "workflows", "status", "--run-id", run_id)
    assert "CANCELLED" in status.stdout
    assert "test gave up" in status.stdout
    again = cli("roe", "workflows", "cancel", run_id)
    assert again.returncode == 1 and "already ended" in again.stderr


def test_api_task_completed_callbacks_receive_each_stage_of_a_run(settings, engine, workflows):
    roe = Roe(settings)
    spec = roe.create_workflow(workflows["two-step"])
    seen: list[TaskCompleted] = []
    roe.on("task.completed", seen.append)
    stop, ready = threading.Event(), threading.Event()
    listener = threading.Thread(target=roe.listen, args=(stop,), kwargs={"ready": ready})
    listener.start()
    try:
        assert ready.wait(20)
        run_id = roe.execute_workflow(spec.workflow_id, {"issueId": "7"}, uuid.uuid4().hex)
        assert wait_for(lambda: len([t for t in seen if t.run_id == run_id]) == 2, 60)
    finally:
        stop.set()
        listener.join(20)

    mine = [t for t in seen if t.run_id == run_id]
    assert [(t.name, t.status) for t in mine] == [("design", "SUCCEEDED"), ("build", "SUCCEEDED")]
    state = roe.status(run_id)
    assert state is not None and state.status.value == "SUCCEEDED"
    assert [e.seq for e in roe.history(run_id)] == list(range(1, state.seq + 1))


def test_api_execute_with_the_same_request_id_names_the_same_run(settings, engine, workflows):
    roe = Roe(settings)
    spec = roe.create_workflow(workflows["two-step"].read_text())

    first = roe.execute_workflow(spec.workflow_id, {"issueId": "1"}, "request-1")
    second = roe.execute_workflow(spec.workflow_id, {"issueId": "1"}, "request-1")

    assert first == second

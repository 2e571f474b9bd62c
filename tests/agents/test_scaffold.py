"""``buildkit agents create``: the scaffold loads, its own tests pass, they catch a bug,
and it serves tasks from Kafka as its README says.

The create commands run the real console script; only the last test needs the broker.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agents.deploy import task_topic_spec
from agents.runtime.manifest import load_manifest
from agents.runtime.runner import RESULTS_TOPIC
from agents.scaffold import AgentNames, ScaffoldError, create_agent, render_agent
from buildkit.catalog import Catalog, default_catalog
from buildkit.contracts.events import AgentResult, AgentTask, TaskStatus
from buildkit.producer import TypedProducer
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from tests.conftest import BUILDKIT, settings_env


def buildkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUILDKIT, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def run_generated_tests(folder: Path) -> subprocess.CompletedProcess[str]:
    """The generated folder's tests, as its README says to run them, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", folder.name],
        cwd=folder.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_create_writes_an_agent_whose_own_tests_pass_and_catch_a_broken_handle(
    tmp_path: Path, prefix: str
) -> None:
    name = f"{prefix}-word-counter"
    done = buildkit(
        "agents", "create", "--type", "worker", "--name", name, "--dir", str(tmp_path),
        "--capability", "text-stats", "--capability", "odd: value #1",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = AgentNames.from_name(name)
    folder = tmp_path / name
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["README.md", "manifest.yaml", f"{names.module}.py", f"test_{names.module}.py"]
    )
    assert f"python -m pytest {name}" in done.stdout

    manifest = load_manifest(folder / "manifest.yaml")
    assert (manifest.name, manifest.type) == (name, "worker")
    assert manifest.capabilities == ("text-stats", "odd: value #1")
    assert manifest.entrypoint == f"{names.module}:{names.class_name}"
    assert manifest.resources.limits is not None
    readme = (folder / "README.md").read_text()
    assert f"python -m agents.runtime.serve --manifest {name}/manifest.yaml" in readme
    assert f"buildkit agents deploy --agent-id {name} --manifest {name}/manifest.yaml" in readme

    passed = run_generated_tests(folder)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "4 passed" in passed.stdout

    # Off by one in the count: the generated tests must notice.
    code = folder / f"{names.module}.py"
    right = 'metrics={"words": float(len(words)),'
    assert right in code.read_text()
    code.write_text(code.read_text().replace(right, 'metrics={"words": float(len(words) + 1),'))
    broken = run_generated_tests(folder)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "1 failed, 3 passed" in broken.stdout
    assert "test_counts_the_words_and_references_the_text" in broken.stdout


@pytest.mark.parametrize("agent_type", ["governor", "critic", "observer"])
def test_every_manifest_type_scaffolds_to_a_loadable_manifest(
    tmp_path: Path, agent_type: str
) -> None:
    scaffold = render_agent("gate-keeper", agent_type, tmp_path / "gate-keeper")
    assert scaffold.manifest.type == agent_type
    assert scaffold.manifest.entrypoint == "gate_keeper_agent:GateKeeperAgent"


def test_create_defaults_to_the_current_directory(tmp_path: Path) -> None:
    done = buildkit("agents", "create", "--type", "critic", "--name", "spell-check", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "spell-check" / "spell_check_agent.py").is_file()
    assert load_manifest(tmp_path / "spell-check" / "manifest.yaml").type == "critic"


@pytest.mark.parametrize(
    ("name", "module", "class_name", "code_prefix"),
    [
        ("echo", "echo_agent", "EchoAgent", "echo"),
        ("word-counter", "word_counter_agent", "WordCounterAgent", "word_counter"),
        ("review-agent", "review_agent", "ReviewAgent", "review_agent"),
        ("json", "json_agent", "JsonAgent", "json"),  # never shadows the stdlib module
        ("t-1a2b-x9", "t_1a2b_x9_agent", "T1a2bX9Agent", "t_1a2b_x9"),
    ],
)
def test_python_names_derive_from_the_agent_name(
    name: str, module: str, class_name: str, code_prefix: str
) -> None:
    assert AgentNames.from_name(name) == AgentNames(name, module, class_name, code_prefix)


@pytest.mark.parametrize(
    "name", ["Echo", "echo_words", "-echo", "echo-", "echo--words", "3d-printer", "a" * 64, ""]
)
def test_names_that_are_not_lowercase_kebab_case_are_refused(name: str) -> None:
    with pytest.raises(ScaffoldError, match="not a valid agent name"):
        AgentNames.from_name(name)


def test_a_bad_name_is_an_error_that_suggests_a_fix(tmp_path: Path) -> None:
    done = buildkit("agents", "create", "--type", "worker", "--name", "Word_Counter", cwd=tmp_path)
    assert done.returncode == 1
    assert '"Word_Counter" is not a valid agent name' in done.stderr
    assert 'e.g. "word-counter"' in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_type_lists_the_valid_ones(tmp_path: Path) -> None:
    done = buildkit("agents", "create", "--type", "wroker", "--name", "echo", cwd=tmp_path)
    assert done.returncode == 1
    assert 'unknown agent type "wroker"' in done.stderr
    assert "governor, worker, critic, observer" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_kept_unless_forced(tmp_path: Path) -> None:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "echo_agent.py").write_text("# my work")
    refused = buildkit("agents", "create", "--type", "worker", "--name", "echo", cwd=tmp_path)
    assert refused.returncode == 1
    assert "already exists" in refused.stderr
    assert "--force" in refused.stderr
    assert (folder / "echo_agent.py").read_text() == "# my work"

    forced = buildkit(
        "agents", "create", "--type", "worker", "--name", "echo", "--force", cwd=tmp_path
    )
    assert forced.returncode == 0, forced.stderr
    assert "class EchoAgent(Agent)" in (folder / "echo_agent.py").read_text()
    assert (folder / "notes.txt").read_text() == "mine"


def _results(
    settings: Settings, task_ids: set[str], timeout_s: float = 45
) -> dict[str, AgentResult]:
    serde = SerdeRegistry(settings, default_catalog()).for_topic(RESULTS_TOPIC)
    consumer = Consumer(settings.kafka_config(**{"group.id": "unused", "log_level": 0}))
    partitions = consumer.list_topics(RESULTS_TOPIC, timeout=5).topics[RESULTS_TOPIC].partitions
    consumer.assign([TopicPartition(RESULTS_TOPIC, p, OFFSET_BEGINNING) for p in partitions])
    found: dict[str, AgentResult] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while set(found) != task_ids and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            result = serde.decode(msg.value())
            if isinstance(result, AgentResult) and result.task_id in task_ids:
                found[result.task_id] = result
    finally:
        consumer.close()
    return found


@pytest.mark.stack
def test_a_scaffolded_agent_served_from_its_manifest_answers_tasks_on_kafka(
    settings: Settings, prefix: str, tmp_path: Path
) -> None:
    apply_topics(settings, default_catalog())  # results, heartbeats, registry
    scaffold = create_agent(f"{prefix}-counter", "worker", tmp_path)
    spec = task_topic_spec(scaffold.manifest)
    apply_topics(settings, Catalog([spec]))
    # The README's command, from the folder that holds the agent's folder.
    serve = subprocess.Popen(
        [sys.executable, "-m", "agents.runtime.serve", "--manifest",
         f"{scaffold.names.name}/manifest.yaml", "--heartbeat-interval", "1"],
        cwd=tmp_path, env=settings_env(settings), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        good, bad = f"{prefix}-good", f"{prefix}-bad"
        with TypedProducer(settings, catalog=Catalog([spec])) as producer:
            for task_id, parameters in ((good, json.dumps({"text": "a b c d"})), (bad, "{")):
                task = AgentTask(
                    task_id=task_id,
                    agent=scaffold.names.name,
                    created_at=now,
                    parameters_json=parameters,
                )
                producer.produce(spec.name, task, key=task_id)
        results = _results(settings, {good, bad})
    finally:
        serve.terminate()
        _, log = serve.communicate(timeout=30)
    assert set(results) == {good, bad}, log
    assert results[good].status is TaskStatus.SUCCEEDED
    assert results[good].metrics == {"words": 4.0, "characters": 7.0}
    assert results[bad].error is not None
    assert results[bad].error.code == f"{scaffold.names.code_prefix}.invalid_parameters"
    assert serve.returncode == 0, log

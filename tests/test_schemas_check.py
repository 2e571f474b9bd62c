"""``buildkit schemas check|list|register``: file checks on copies of schemas/, and the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from buildkit.cli import main
from buildkit.contracts import AgentTask, event_types
from buildkit.contracts.compat_check import CheckResult, Problem, check_schemas
from buildkit.dev.procs import free_port
from schemas import SCHEMA_DIR

Schema = dict[str, Any]


@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    """A private copy of schemas/ (contracts and history) to break at will."""
    target = tmp_path / "schemas"
    target.mkdir()
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, target / path.name)
    shutil.copytree(SCHEMA_DIR / "history", target / "history")
    return target


def edit(schema_dir: Path, name: str, change: Callable[[Schema], None]) -> None:
    path = schema_dir / name
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))


def field_of(schema: Schema, name: str) -> Schema:
    return next(f for f in schema["fields"] if f["name"] == name)


def check(schema_dir: Path, **kwargs: Any) -> CheckResult:
    return check_schemas(schema_dir, schema_dir / "history", **kwargs)


def problems(result: CheckResult, kind: str) -> list[Problem]:
    return [p for p in result.problems if p.check == kind]


def add_priority(schema: Schema) -> None:
    schema["fields"].append({"name": "priority", "type": ["null", "long"], "default": None})


class TaskWithPriority(AgentTask):
    priority: int | None = None


# The model of the changed contract must carry the record name of the contract.
TaskWithPriority.__name__ = "AgentTask"


def models_with(model: type[AgentTask]) -> dict[str, Any]:
    found: dict[str, Any] = {m.schema_file: m for m in event_types().values()}
    found[model.schema_file] = model
    return found


# -- the repository ---------------------------------------------------------------


def test_the_repository_schemas_pass_every_check() -> None:
    result = check_schemas()

    assert [str(p) for p in result.problems] == []
    assert len(result.reports) == len(event_types())


# -- compatible changes ---------------------------------------------------------------


def test_adding_an_optional_field_with_a_default_passes_and_is_recorded_as_v2(
    schema_dir: Path,
) -> None:
    edit(schema_dir, "agent_task.avsc", add_priority)
    models = models_with(TaskWithPriority)

    before = check(schema_dir, models=models)
    recorded = check(schema_dir, models=models, record=True)
    after = check(schema_dir, models=models)

    assert [(p.check, p.field) for p in before.problems] == [("history", None)]
    assert "differs from the latest recorded version schemas/history/agent_task/v1.avsc" in str(
        before.problems[0]
    )
    assert "buildkit schemas check --record" in str(before.problems[0])
    v2 = schema_dir / "history" / "agent_task" / "v2.avsc"
    assert recorded.ok and recorded.recorded == [v2]
    assert v2.read_bytes() == (schema_dir / "agent_task.avsc").read_bytes()
    assert after.ok


def test_removing_a_field_is_backward_compatible(schema_dir: Path) -> None:
    edit(schema_dir, "agent_task.avsc", lambda s: s["fields"].remove(field_of(s, "stage")))

    result = check(schema_dir)

    assert problems(result, "compatibility") == []
    assert [p.field for p in problems(result, "model")] == ["stage"]


# -- breaking changes -------------------------------------------------------------------


def test_adding_a_field_without_default_fails_naming_the_field(schema_dir: Path) -> None:
    edit(
        schema_dir,
        "agent_task.avsc",
        lambda s: s["fields"].append({"name": "owner", "type": "string"}),
    )

    result = check(schema_dir, record=True)

    (problem,) = problems(result, "compatibility")
    assert problem.field == "owner"
    assert str(problem).startswith('schemas/agent_task.avsc: field "owner": ')
    assert '"default"' in problem.message
    assert "schemas/history/agent_task/v1.avsc" in problem.message
    assert result.recorded == []  # a breaking version is never recorded
    assert not (schema_dir / "history" / "agent_task" / "v2.avsc").exists()


def test_changing_a_field_type_from_string_to_long_fails_naming_the_field(schema_dir: Path) -> None:
    edit(schema_dir, "agent_task.avsc", lambda s: field_of(s, "agent").update(type="long"))

    result = check(schema_dir)

    (problem,) = problems(result, "compatibility")
    assert str(problem).startswith('schemas/agent_task.avsc: field "agent": ')
    assert '"long"' in problem.message and '"string"' in problem.message


def test_removing_an_enum_symbol_old_writers_used_fails_naming_the_field(schema_dir: Path) -> None:
    edit(
        schema_dir,
        "agent_result.avsc",
        lambda s: field_of(s, "status")["type"]["symbols"].remove("TIMED_OUT"),
    )

    result = check(schema_dir)

    # BACKWARD_TRANSITIVE: one problem per recorded version old writers used.
    found = problems(result, "compatibility")
    assert len(found) == len(list((schema_dir / "history" / "agent_result").glob("v*.avsc")))
    for problem in found:
        assert problem.field == "status"
        assert "TIMED_OUT" in problem.message


def test_a_breaking_change_inside_a_nested_optional_record_names_the_nested_field(
    schema_dir: Path,
) -> None:
    def break_code(s: Schema) -> None:
        record = field_of(s, "error")["type"][1]
        field_of(record, "code")["type"] = "long"

    edit(schema_dir, "agent_result.avsc", break_code)

    found = problems(check(schema_dir), "compatibility")

    assert found and {problem.field for problem in found} == {"error.code"}


def test_compatibility_is_checked_against_every_recorded_version(schema_dir: Path) -> None:
    # v2 drops "attempt" (fine); re-adding it as a string is fine against v2, not against v1.
    edit(schema_dir, "agent_task.avsc", lambda s: s["fields"].remove(field_of(s, "attempt")))
    v2 = schema_dir / "history" / "agent_task" / "v2.avsc"
    shutil.copy(schema_dir / "agent_task.avsc", v2)
    edit(
        schema_dir,
        "agent_task.avsc",
        lambda s: s["fields"].append({"name": "attempt", "type": "string", "default": "1"}),
    )

    (problem,) = problems(check(schema_dir), "compatibility")

    assert problem.field == "attempt"
    assert "history/agent_task/v1.avsc" in problem.message
    assert "v2.avsc" not in problem.message


# -- other problems -----------------------------------------------------------------------


def test_model_and_schema_disagreement_is_reported_naming_the_field(schema_dir: Path) -> None:
    edit(schema_dir, "agent_task.avsc", add_priority)

    (problem,) = problems(check(schema_dir), "model")

    assert problem.field == "priority"
    assert "AgentTask" in problem.message and "not in the model" in problem.message


def test_a_file_that_is_not_json_is_reported_with_its_line(schema_dir: Path) -> None:
    (schema_dir / "agent_task.avsc").write_text('{\n  "type": "record",\n  "name": \n}')

    (problem,) = problems(check(schema_dir), "parse")

    assert str(problem).startswith("schemas/agent_task.avsc: line 4")


def test_an_invalid_avro_schema_is_reported_naming_the_file(schema_dir: Path) -> None:
    edit(schema_dir, "agent_result.avsc", lambda s: field_of(s, "agent").update(type="strng"))

    (problem,) = problems(check(schema_dir), "parse")

    assert problem.file == "schemas/agent_result.avsc"
    assert "strng" in problem.message


def test_a_contract_without_history_asks_to_record_it(schema_dir: Path) -> None:
    shutil.rmtree(schema_dir / "history" / "agent_heartbeat")

    result = check(schema_dir)
    (problem,) = result.problems
    recorded = check(schema_dir, record=True)

    assert "has no recorded version" in problem.message
    assert recorded.recorded == [schema_dir / "history" / "agent_heartbeat" / "v1.avsc"]


def test_a_removed_contract_with_history_is_reported(schema_dir: Path) -> None:
    (schema_dir / "gitlab_action.avsc").unlink()

    found = {(p.check, p.file) for p in check(schema_dir).problems}

    assert ("history", "schemas/gitlab_action.avsc") in found
    assert ("model", "schemas/gitlab_action.avsc") in found


def test_enum_symbol_added_is_compatible_and_only_the_model_disagrees(schema_dir: Path) -> None:
    edit(
        schema_dir,
        "agent_result.avsc",
        lambda s: field_of(s, "status")["type"]["symbols"].append("CANCELLED"),
    )

    result = check(schema_dir)

    assert problems(result, "compatibility") == []
    assert [p.field for p in problems(result, "model")] == ["status"]


# -- the CLI ------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture(scope="module")
def cli() -> Any:
    main._register()
    return main.app


def test_cli_check_passes_on_the_repository(cli: Any) -> None:
    done = runner.invoke(cli, ["schemas", "check"])

    assert done.exit_code == 0, done.output
    assert f"{len(event_types())} schemas OK" in done.output


def test_cli_check_prints_each_problem_and_exits_1(cli: Any, schema_dir: Path) -> None:
    edit(schema_dir, "agent_task.avsc", lambda s: field_of(s, "agent").update(type="long"))

    done = runner.invoke(cli, ["schemas", "check", "--dir", str(schema_dir)])

    assert done.exit_code == 1
    assert 'schemas/agent_task.avsc: field "agent": ' in done.output
    assert "Traceback" not in done.output


def test_cli_list_works_without_a_registry(cli: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    done = runner.invoke(cli, ["schemas", "list"], env={"BAR_SCHEMA_REGISTRY_URL": url})

    assert done.exit_code == 0, done.output
    for path in SCHEMA_DIR.glob("*.avsc"):
        assert path.name in done.output
    assert "unreachable" in done.output


def test_cli_register_without_a_registry_names_the_url_in_one_line(cli: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    done = runner.invoke(cli, ["schemas", "register"], env={"BAR_SCHEMA_REGISTRY_URL": url})

    assert done.exit_code == 3
    (line,) = done.output.strip().splitlines()
    assert url in line and line.startswith("error:")


@pytest.mark.stack
def test_cli_register_then_list_against_the_real_registry(cli: Any, registry_url: str) -> None:
    env = {"BAR_SCHEMA_REGISTRY_URL": registry_url}

    registered = runner.invoke(cli, ["schemas", "register"], env=env)
    again = runner.invoke(cli, ["schemas", "register"], env=env)
    one = runner.invoke(
        cli,
        [
            "schemas",
            "register",
            "--subject",
            "t-one-value",
            "--schema",
            str(SCHEMA_DIR / "agent_task.avsc"),
        ],
        env=env,
    )
    listed = runner.invoke(cli, ["schemas", "list"], env=env)

    assert registered.exit_code == 0, registered.output
    assert registered.output == again.output  # idempotent: same ids
    assert one.exit_code == 0, one.output
    task_id = next(
        line.split()[-1]
        for line in registered.output.splitlines()
        if line.startswith("bar.tasks.test-generator-value ")
    )
    assert f"t-one-value  id {task_id}" in one.output  # same schema, same global id
    assert listed.exit_code == 0, listed.output
    assert "unreachable" not in listed.output
    assert f" {task_id} " in listed.output

"""api-first-enforcer: the spec is found, validated with its paths, linted and published."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agents.qits import ApiFirstEnforcerAgent, LocalArtifactStore
from agents.qits.spec import fenced_spec
from buildkit.contracts.events import ActionKind, TaskStatus
from tests.agents.qits.helpers import PETSTORE, USERS, dispatch, issue_event


@pytest.fixture
def agent(tmp_path: Path) -> ApiFirstEnforcerAgent:
    return ApiFirstEnforcerAgent(data_dir=tmp_path)


@pytest.mark.parametrize("spec", [PETSTORE, USERS], ids=["3.0", "3.1"])
def test_valid_spec_is_published_as_the_openapi_spec_artifact(agent, spec):
    result, _ = dispatch(agent, "api-design", workflow_inputs={"spec": spec.read_text()})
    assert result.status is TaskStatus.SUCCEEDED, result.error
    path = LocalArtifactStore(agent.data_dir / "artifacts").resolve(
        result.outputs["openapi-spec.yaml"]
    )
    assert path == agent.data_dir / "artifacts/run-1/api-design/openapi-spec.yaml"
    assert yaml.safe_load(path.read_text()) == yaml.safe_load(spec.read_text())
    assert result.metrics["lint_violations"] == 0
    assert result.metrics["operations"] >= 4


def test_spec_given_as_file_reference_is_read(agent):
    result, _ = dispatch(agent, "api-design", spec=PETSTORE.absolute().as_uri())
    assert result.status is TaskStatus.SUCCEEDED, result.error


def test_missing_operation_ids_and_error_responses_fail_with_their_paths(agent):
    doc = yaml.safe_load(PETSTORE.read_text())
    del doc["paths"]["/pets"]["get"]["operationId"]
    doc["paths"]["/pets/{petId}"]["get"]["responses"].pop("404")
    result, _ = dispatch(agent, "api-design", workflow_inputs={"spec": yaml.safe_dump(doc)})
    assert result.status is TaskStatus.FAILED
    assert result.error.code == "qits.spec_invalid"
    assert "paths./pets.get: has no operationId [operation-id]" in result.error.message
    assert (
        "paths./pets/{petId}.get.responses: takes a path or required parameter"
        in result.error.message
    )


def test_lint_violations_only_count_when_the_policy_says_so(agent):
    doc = yaml.safe_load(PETSTORE.read_text())
    del doc["paths"]["/pets"]["get"]["operationId"]
    result, _ = dispatch(
        agent,
        "api-design",
        workflow_inputs={"spec": yaml.safe_dump(doc)},
        policy={"lint_fails": False},
    )
    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert result.metrics["lint_violations"] == 1


def test_invalid_openapi_fails_with_the_path_of_each_error(agent):
    doc = yaml.safe_load(PETSTORE.read_text())
    del doc["info"]["title"]
    doc["paths"]["/pets"]["get"]["responses"]["200"] = {}
    result, _ = dispatch(agent, "api-design", workflow_inputs={"spec": yaml.safe_dump(doc)})
    assert result.error.code == "qits.spec_invalid"
    assert "info: 'title' is a required property [schema]" in result.error.message
    assert "paths./pets.get.responses.200:" in result.error.message


def test_spec_in_a_fenced_block_of_the_issue_becomes_the_artifact(agent):
    description = f"We need pets.\n\n```yaml\n{PETSTORE.read_text()}```\n\nThanks!"
    result, ctx = dispatch(agent, "api-design", workflow_inputs=issue_event(description))
    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert "openapi-spec.yaml" in result.outputs
    assert ctx.actions == []


def test_invalid_spec_in_an_issue_gets_a_note_saying_what_to_fix(agent):
    spec = PETSTORE.read_text().replace("operationId: listPets", "summary: list")
    result, ctx = dispatch(
        agent, "api-design", workflow_inputs=issue_event(f"```yml\n{spec}```\n", iid=31)
    )
    assert result.error.code == "qits.spec_invalid"
    (note,) = ctx.actions
    assert note.kind is ActionKind.ISSUE_NOTE
    assert (note.project_id, note.target_iid) == (7, 31)
    assert "`paths./pets.get` | operation-id | has no operationId" in note.body


def test_issue_without_a_spec_is_spec_missing_with_a_note(agent):
    result, ctx = dispatch(agent, "api-design", workflow_inputs=issue_event("just words"))
    assert result.error.code == "qits.spec_missing"
    assert "```yaml" in ctx.actions[0].body


def test_unparsable_spec_is_invalid(agent):
    result, _ = dispatch(agent, "api-design", workflow_inputs={"spec": "openapi: [\n  x: {"})
    assert result.error.code == "qits.spec_invalid"


def test_fenced_block_without_openapi_key_is_ignored():
    text = '```yaml\nfoo: 1\n```\n~~~json\n{"openapi": "3.1.0"}\n~~~\n'
    assert fenced_spec(text) == '{"openapi": "3.1.0"}\n'


def test_unknown_parameter_is_a_bad_input_listing_the_allowed_ones(agent):
    result, _ = dispatch(agent, "api-design", spce="x")
    assert result.error.code == "qits.bad_input"
    assert "spce" in result.error.message and "spec" in result.error.message

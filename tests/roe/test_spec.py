"""Workflow YAML: loading the shipped workflow, and every problem at its exact line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from streams.roe.errors import WorkflowSpecError
from streams.roe.model import Backoff, InputSpec, StageSpec, TriggerSpec
from streams.roe.spec import builtin_workflows, load_workflow, parse_duration, parse_workflow

FEATURE_WORKFLOW = """\
# .gitlab/workflows/feature-workflow.yml
name: Feature Development Workflow
version: 0.1.0
trigger:
  - event: issue.created
    labels: [feature]
stages:
  - name: api-design
    agent: api-first-enforcer
    dependencies: []
    outputs:
      - openapi-spec.yaml
  - name: test-generation
    agent: test-generator
    dependencies: [api-design]
    inputs:
      - openapi-spec.yaml
    outputs:
      - tests/
  - name: implementation
    agent: api-builder
    dependencies: [test-generation]
    inputs:
      - openapi-spec.yaml
      - tests/
    outputs:
      - src/
  - name: quality-gate
    agent: quality-gate-enforcer
    dependencies: [implementation]
    conditions:
      - coverage >= 80%
      - phpcs violations == 0
"""

HEAD = "name: w\nversion: '1'\n"


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(WorkflowSpecError) as err:
        parse_workflow(textwrap.dedent(text), "wf.yml")
    return err.value.problems


def only_problem(text: str) -> tuple[int, int, str]:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# -- loading --------------------------------------------------------------------------


def test_architecture_documents_workflow_loads_as_is() -> None:
    spec = parse_workflow(FEATURE_WORKFLOW, "feature-workflow.yml")
    assert spec.name == "Feature Development Workflow"
    assert spec.version == "0.1.0"
    assert spec.workflow_id == "feature-development-workflow@0.1.0"
    assert spec.trigger == (TriggerSpec(event="issue.created", labels=("feature",)),)
    assert [s.name for s in spec.stages] == [
        "api-design",
        "test-generation",
        "implementation",
        "quality-gate",
    ]
    assert spec.stage("implementation") == StageSpec(
        name="implementation",
        agent="api-builder",
        dependencies=("test-generation",),
        inputs=("openapi-spec.yaml", "tests/"),
        outputs=("src/",),
    )
    assert spec.stage("quality-gate").conditions == ("coverage >= 80%", "phpcs violations == 0")


# The shipped file: the architecture document's, plus the quality gate's inputs (what it
# measures: the spec, the generated tests and the built implementation).
SHIPPED_FEATURE_WORKFLOW = FEATURE_WORKFLOW.replace(
    "    dependencies: [implementation]\n",
    "    dependencies: [implementation]\n"
    "    inputs:\n      - openapi-spec.yaml\n      - tests/\n      - src/\n",
)


def test_builtin_feature_workflow_ships_as_the_architecture_documents_file_plus_gate_inputs() -> (
    None
):
    paths = builtin_workflows()
    assert [p.name for p in paths] == [
        "feature-workflow.yml",
        "merge-request-governance.yml",
        "push-governance.yml",
    ]
    assert SHIPPED_FEATURE_WORKFLOW != FEATURE_WORKFLOW
    assert paths[0].read_text(encoding="utf-8") == SHIPPED_FEATURE_WORKFLOW
    shipped = load_workflow(paths[0])
    assert shipped.stage("quality-gate").inputs == ("openapi-spec.yaml", "tests/", "src/")
    assert shipped.stages[:3] == parse_workflow(FEATURE_WORKFLOW).stages[:3]


def test_load_workflow_reads_a_file_and_names_it_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "wf.yml"
    path.write_text(HEAD + "stages: 5\n", encoding="utf-8")
    with pytest.raises(WorkflowSpecError) as err:
        load_workflow(path)
    assert str(err.value) == f"{path}:3:9: stages must be a list of stages, got 5"


def test_a_missing_file_is_a_workflow_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowSpecError, match="cannot read the workflow file"):
        load_workflow(tmp_path / "nope.yml")


def test_roe_additions_load() -> None:
    spec = parse_workflow(
        """\
name: Additions
version: 1.10
description: every optional key
inputs:
  issue_id:
  branch: {default: main}
  dry_run: {required: false}
trigger:
  - cron: "*/5 * * * *"
  - event: merge_request.opened
    labels: needs-review
stages:
  - name: plan
    agent: ossa://production/planner
    fallbackLocal: true
    timeout: 90s
    retries: 3
    backoff: {initial: 2s, multiplier: 2, max: 5m}
    onFailure: continue
    inputs: [issue_id]
    outputs: [plan.md]
  - name: build
    agent: api-builder
    dependencies: plan
    inputs: [plan.md, branch]
    timeout: 1h30m
    on_failure: fail
    fallback_local: false
"""
    )
    assert spec.version == "1.10"  # the written form, not the float 1.1
    assert spec.description == "every optional key"
    assert spec.inputs == (
        InputSpec(name="issue_id"),
        InputSpec(name="branch", required=False, default="main"),
        InputSpec(name="dry_run", required=False),
    )
    assert spec.trigger == (
        TriggerSpec(cron="*/5 * * * *"),
        TriggerSpec(event="merge_request.opened", labels=("needs-review",)),
    )
    plan, build = spec.stages
    assert plan.remote == ("production", "planner")
    assert plan.fallback_local is True
    assert plan.timeout_s == 90
    assert plan.retries == 3
    assert plan.backoff == Backoff(initial_s=2, multiplier=2, max_s=300)
    assert plan.on_failure == "continue"
    assert build.dependencies == ("plan",)
    assert build.timeout_s == 5400
    assert build.on_failure == "fail"


def test_workflow_inputs_may_be_a_list_of_names() -> None:
    spec = parse_workflow(HEAD + "inputs: [a, b]\nstages:\n  - {name: s, agent: x, inputs: [a]}\n")
    assert spec.inputs == (InputSpec(name="a"), InputSpec(name="b"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("500ms", 0.5), ("12.5", 12.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_timeout_may_be_a_plain_number_of_seconds() -> None:
    spec = parse_workflow(HEAD + "stages:\n  - {name: s, agent: x, timeout: 45}\n")
    assert spec.stages[0].timeout_s == 45


# -- every problem at once ------------------------------------------------------------


def test_all_problems_of_a_file_are_reported_in_file_order() -> None:
    found = problems(
        """\
        name: w
        version: '1'
        stages:
          - name: a
            agent: x
            retries: many
            dependencies: [zzz]
          - name: a
            agent: y
            timeout: soon
        """
    )
    assert [(line, col) for line, col, _ in found] == [(6, 14), (7, 20), (8, 11), (10, 14)]


def test_error_renders_path_line_column_lines() -> None:
    with pytest.raises(WorkflowSpecError) as err:
        parse_workflow(HEAD + "stages:\n  - {name: a, agent: x, retries: -1}\n", "wf.yml")
    assert str(err.value) == (
        'wf.yml:4:34: retries of stage "a" must be a whole number >= 0, got -1'
    )


# -- the graph ------------------------------------------------------------------------


def test_unknown_dependency_is_named_with_close_names_suggested() -> None:
    line, col, msg = only_problem(
        """\
        name: w
        version: '1'
        stages:
          - {name: api-design, agent: x}
          - name: tests
            agent: y
            dependencies: [api-desing]
        """
    )
    assert (line, col) == (7, 20)
    assert msg == 'stage "tests" depends on unknown stage "api-desing"; did you mean "api-design"?'


def test_unknown_dependency_without_close_names_lists_the_stages() -> None:
    _, _, msg = only_problem(HEAD + "stages:\n  - {name: a, agent: x, dependencies: [zzz]}\n")
    assert msg == 'stage "a" depends on unknown stage "zzz" (stages: a)'


def test_dependency_cycle_is_listed_in_order() -> None:
    line, col, msg = only_problem(
        """\
        name: w
        version: '1'
        stages:
          - {name: a, agent: x, dependencies: [b]}
          - {name: b, agent: x, dependencies: [c]}
          - {name: c, agent: x, dependencies: [a]}
          - {name: d, agent: x, dependencies: [c]}
        """
    )
    assert (line, col) == (4, 40)
    assert msg == "dependency cycle: a → b → c → a (each stage depends on the next)"


def test_a_stage_depending_on_itself_is_rejected() -> None:
    assert only_problem(HEAD + "stages:\n  - {name: a, agent: x, dependencies: [a]}\n") == (
        4,
        40,
        'stage "a" depends on itself',
    )


def test_duplicate_stage_name_points_at_the_second() -> None:
    assert only_problem(
        HEAD + "stages:\n  - name: build\n    agent: x\n  - name: build\n    agent: y\n"
    ) == (6, 11, 'duplicate stage name "build" (first defined at line 4)')


def test_listing_a_dependency_twice_is_rejected() -> None:
    line, col, msg = only_problem(
        HEAD + "stages:\n  - {name: a, agent: x}\n  - {name: b, agent: x, dependencies: [a, a]}\n"
    )
    assert (line, col, msg) == (5, 43, 'stage "b" lists dependency "a" twice')


def test_input_no_earlier_stage_outputs_is_rejected_with_a_hint() -> None:
    line, col, msg = only_problem(
        """\
        name: w
        version: '1'
        stages:
          - {name: design, agent: x, outputs: [spec.yaml]}
          - {name: build, agent: y, inputs: [spec.yaml]}
        """
    )
    assert (line, col) == (5, 38)
    assert msg == (
        'input "spec.yaml" of stage "build" is not an output of any stage it depends on, '
        'nor a workflow input; stage "design" outputs it: add it to dependencies'
    )


def test_inputs_from_transitive_dependencies_and_workflow_inputs_are_available() -> None:
    spec = parse_workflow(
        """\
name: w
version: '1'
inputs: [issue_id]
stages:
  - {name: a, agent: x, outputs: [spec.yaml]}
  - {name: b, agent: x, dependencies: [a]}
  - {name: c, agent: x, dependencies: [b], inputs: [spec.yaml, issue_id]}
"""
    )
    assert spec.stage("c").inputs == ("spec.yaml", "issue_id")


def test_a_stages_own_output_is_not_its_input() -> None:
    line, col, msg = only_problem(
        HEAD + "stages:\n  - {name: a, agent: x, inputs: [f], outputs: [f]}\n"
    )
    assert (line, col) == (4, 34)
    assert msg.startswith('input "f" of stage "a" is not an output')


# -- conditions -----------------------------------------------------------------------


def test_invalid_condition_points_inside_a_plain_scalar() -> None:
    line, col, msg = only_problem(
        HEAD + "stages:\n  - name: gate\n    agent: x\n    conditions:\n      - coverage >= high\n"
    )
    assert (line, col) == (7, 21)
    assert msg == (
        'invalid condition "coverage >= high": expected a number after ">=", got "high" '
        "(comparing two metrics is not supported)"
    )


def test_invalid_condition_points_inside_a_quoted_scalar() -> None:
    line, col, msg = only_problem(
        HEAD + 'stages:\n  - name: gate\n    agent: x\n    conditions: ["phpcs violations = 0"]\n'
    )
    assert (line, col) == (6, 36)
    assert msg == 'invalid condition "phpcs violations = 0": unexpected "=": use "==" to compare'


def test_invalid_condition_in_a_block_scalar_points_at_the_scalar() -> None:
    line, col, _ = only_problem(
        HEAD + "stages:\n  - name: gate\n    agent: x\n    conditions:\n      - >-\n"
        "        coverage >=\n        high\n"
    )
    assert (line, col) == (7, 9)


# -- types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "col", "message"),
    [
        ("retries: many", 10, 'retries of stage "a" must be a whole number >= 0, got "many"'),
        ("retries: 1.5", 10, "must be a whole number >= 0, got 1.5"),
        ("retries: true", 10, "must be a whole number >= 0, got true (YAML reads it as a"),
        ("timeout: soon", 10, '"soon" is not a duration: use seconds or e.g. 90s, 10m, 1h30m'),
        ("timeout: 0", 10, 'timeout of stage "a" must be greater than 0, got 0'),
        ("timeout: [1]", 10, "must be seconds or a duration like 90s, got a list"),
        ("backoff: {multiplier: 0.5}", 23, 'backoff multiplier of stage "a" must be a number >= 1'),
        ("backoff: {initial: -1s}", 20, "is not a duration"),
        ("backoff: 5", 10, 'backoff of stage "a" must be a mapping of keys, got 5'),
        ("on_failure: retry", 13, 'on_failure of stage "a" must be "fail" or "continue"'),
        ("onFailure: 1", 12, 'onFailure of stage "a" must be "fail" or "continue", got 1'),
        ("fallbackLocal: 'no'", 16, 'fallbackLocal of stage "a" must be true or false, got "no"'),
        ("outputs: {a: 1}", 10, 'outputs of stage "a" must be a list, got a mapping'),
        ("dependencies: [[b]]", 16, "each entry of dependencies of stage"),
        ("conditions: [5]", 14, 'invalid condition "5"'),
    ],
)
def test_wrong_types_are_rejected(stage: str, col: int, message: str) -> None:
    """``col`` counts within ``stage``, which follows a 24-character prefix on line 4."""
    prefix = "  - {name: a, agent: x, "
    line, column, msg = only_problem(HEAD + f"stages:\n{prefix}{stage}}}\n")
    assert (line, column) == (4, len(prefix) + col)
    assert message in msg


def test_a_lone_dependency_string_is_a_one_item_list() -> None:
    spec = parse_workflow(
        HEAD + "stages:\n  - {name: a, agent: x}\n  - {name: b, agent: x, dependencies: a}\n"
    )
    assert spec.stage("b").dependencies == ("a",)


def test_stages_must_be_a_list() -> None:
    assert only_problem(HEAD + "stages: 5\n") == (3, 9, "stages must be a list of stages, got 5")


@pytest.mark.parametrize("stages", ["stages: []\n", "stages:\n"])
def test_empty_stages_are_rejected(stages: str) -> None:
    line, col, msg = only_problem(HEAD + stages)
    assert (line, col) == ((3, 9) if "[]" in stages else (3, 1))
    assert msg == "stages is empty: a workflow needs at least one stage"


def test_a_stage_must_be_a_mapping() -> None:
    assert only_problem(HEAD + "stages:\n  - build\n") == (
        4,
        5,
        'stage 1 must be a mapping of keys, got "build"',
    )


def test_name_that_yaml_reads_as_boolean_is_rejected() -> None:
    line, col, msg = only_problem("name: yes\nversion: '1'\nstages:\n  - {name: a, agent: x}\n")
    assert (line, col) == (1, 7)
    assert msg.startswith("name must be text, got yes (YAML reads it as a boolean")


# -- keys -----------------------------------------------------------------------------


def test_unknown_top_level_key_lists_the_allowed_ones() -> None:
    assert only_problem(HEAD + "descripton: x\nstages:\n  - {name: a, agent: x}\n") == (
        3,
        1,
        'unknown key "descripton" in the workflow; did you mean "description"? '
        "(allowed: name, version, description, inputs, trigger, stages)",
    )


def test_unknown_stage_key_lists_the_allowed_ones_and_both_spellings() -> None:
    line, col, msg = only_problem(HEAD + "stages:\n  - name: a\n    agent: x\n    retry: 3\n")
    assert (line, col) == (6, 5)
    assert msg == (
        'unknown key "retry" in stage "a"; did you mean "retries"? (allowed: name, agent, '
        "dependencies, inputs, outputs, conditions, timeout, retries, backoff, "
        "on_failure/onFailure, fallbackLocal/fallback_local)"
    )


def test_both_spellings_of_a_key_are_rejected() -> None:
    assert only_problem(
        HEAD + "stages:\n  - name: a\n    agent: ossa://n/a\n    on_failure: fail\n"
        "    onFailure: continue\n"
    ) == (7, 5, '"onFailure" is given twice in stage "a" (first as "on_failure" at line 6)')


def test_duplicate_yaml_keys_are_rejected() -> None:
    assert only_problem(HEAD + "name: again\nstages:\n  - {name: a, agent: x}\n") == (
        3,
        1,
        '"name" is given twice in the workflow (first as "name" at line 1)',
    )


def test_missing_required_workflow_keys_are_each_reported() -> None:
    assert problems("description: nothing else\n") == [
        (1, 1, 'the workflow is missing the required key "name"'),
        (1, 1, 'the workflow is missing the required key "version"'),
        (1, 1, 'the workflow is missing the required key "stages"'),
    ]


def test_missing_required_stage_keys_point_at_the_stage() -> None:
    assert problems(HEAD + "stages:\n  - agent: x\n  - name: b\n") == [
        (4, 5, 'stage 1 is missing the required key "name"'),
        (5, 5, 'stage "b" is missing the required key "agent"'),
    ]


# -- YAML itself ----------------------------------------------------------------------


def test_malformed_yaml_reports_the_parsers_mark() -> None:
    line, col, msg = only_problem("name: w\nstages: [a, b\nversion: 1\n")
    assert (line, col) == (3, 8)
    assert msg == (
        "invalid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence at line 2, column 9)"
    )


def test_tabs_in_yaml_indentation_are_reported_where_they_are() -> None:
    line, col, msg = only_problem("name: w\nstages:\n\t- a\n")
    assert (line, col) == (3, 1)
    assert msg.startswith("invalid YAML: found character '\\t' that cannot start any token")


def test_an_empty_file_is_rejected() -> None:
    assert only_problem("# nothing\n") == (
        1,
        1,
        "the file is empty: a workflow needs name, version, stages",
    )


def test_a_document_that_is_not_a_mapping_is_rejected() -> None:
    assert only_problem("- a\n- b\n") == (
        1,
        1,
        "the workflow must be a mapping of keys, got a list",
    )


# -- agents ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agent",
    [
        "ossa://prod",
        "ossa://prod/",
        "ossa:///deployer",
        "ossa://prod/a/b",
        "ossa://pr od/x",
        "http://x/y",
    ],
)
def test_invalid_ossa_addresses_are_rejected(agent: str) -> None:
    line, col, msg = only_problem(HEAD + f"stages:\n  - name: a\n    agent: '{agent}'\n")
    assert (line, col) == (5, 12)
    assert msg == (
        f'invalid agent address "{agent}": expected ossa://<network>/<agent>, '
        "e.g. ossa://production/deployer"
    )


def test_invalid_local_agent_name_is_rejected() -> None:
    _, _, msg = only_problem(HEAD + "stages:\n  - {name: a, agent: api builder}\n")
    assert msg.startswith('invalid agent name "api builder"')


def test_fallback_local_on_a_local_agent_is_an_error() -> None:
    assert only_problem(HEAD + "stages:\n  - name: a\n    agent: x\n    fallbackLocal: true\n") == (
        6,
        5,
        'fallbackLocal only applies to ossa:// agents; stage "a" runs the local agent "x"',
    )


def test_invalid_stage_name_is_rejected() -> None:
    _, col, msg = only_problem(HEAD + "stages:\n  - {name: API Design, agent: x}\n")
    assert col == 12
    assert msg == 'stage name "API Design" may only hold letters, digits, ".", "_", "-"'


# -- triggers and inputs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "col", "message"),
    [
        ("{cron: '61 * * * *'}", 12, 'cron "61 * * * *" is not a valid schedule'),
        ("{cron: '* * * * * *'}", 12, 'cron "* * * * * *" must have 5 fields'),
        ("{event: a, cron: '* * * * *'}", 5, 'a trigger needs exactly one of "event" or "cron"'),
        ("{labels: [x]}", 5, 'a trigger needs exactly one of "event" or "cron"'),
        ("{cron: '@hourly', labels: [x]}", 23, '"labels" only go with an "event" trigger'),
        ("{event: issue created}", 13, 'event must not contain spaces, got "issue created"'),
    ],
)
def test_invalid_triggers_are_rejected(trigger: str, col: int, message: str) -> None:
    line, column, msg = only_problem(
        HEAD + f"trigger:\n  - {trigger}\nstages:\n  - {{name: a, agent: x}}\n"
    )
    assert (line, column) == (4, col)
    assert msg.startswith(message)


def test_unknown_trigger_key_is_named_with_a_suggestion() -> None:
    assert problems(HEAD + "trigger:\n  - {evnt: x}\nstages:\n  - {name: a, agent: x}\n") == [
        (4, 5, 'a trigger needs exactly one of "event" or "cron"'),
        (
            4,
            6,
            'unknown key "evnt" in a trigger; did you mean "event"? (allowed: event, labels, cron)',
        ),
    ]


def test_required_input_with_a_default_is_rejected() -> None:
    assert only_problem(
        HEAD
        + "inputs:\n  branch: {required: true, default: main}\nstages:\n  - {name: a, agent: x}\n"
    ) == (4, 22, 'input "branch" is required: drop its default')


def test_an_input_declared_twice_is_rejected() -> None:
    assert only_problem(HEAD + "inputs: [a, a]\nstages:\n  - {name: s, agent: x}\n") == (
        3,
        13,
        'input "a" is declared twice',
    )

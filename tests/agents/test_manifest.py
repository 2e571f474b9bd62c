"""Agent manifests: the shipped ones load, and every mistake is reported at its line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.runtime.manifest import (
    AgentManifest,
    Limits,
    ManifestError,
    Resources,
    Threshold,
    builtin_manifests_dir,
    load_manifest,
    load_manifests,
    parse_manifest,
)
from buildkit.catalog import AGENTS
from buildkit.errors import BuildKitError

# The architecture document's manifests, field for field.
DOCUMENT: dict[str, dict[str, object]] = {
    "tdd-enforcer": {
        "type": "governor",
        "capabilities": ("test-validation", "coverage-enforcement"),
        "rules": ("tests-before-code", "80-percent-coverage", "red-green-refactor"),
    },
    "version-sync": {
        "type": "governor",
        "capabilities": ("version-management", "changelog-generation"),
        "rules": ("semver-compliance", "changelog-required"),
    },
    "branch-policy": {
        "type": "governor",
        "capabilities": ("branch-validation", "naming-enforcement"),
        "rules": ("__REBUILD-pattern", "feature-prefix"),
    },
    "test-generator": {
        "type": "worker",
        "capabilities": ("ai-test-generation", "contract-testing"),
        "dependencies": ("qits", "llm-gateway"),
    },
    "api-builder": {
        "type": "worker",
        "capabilities": ("api-implementation", "openapi-codegen"),
        "dependencies": ("test-generator",),
    },
    "doc-sync": {
        "type": "worker",
        "capabilities": ("wiki-sync", "markdown-generation"),
        "dependencies": ("gitlab-api",),
    },
    "security-auditor": {
        "type": "critic",
        "capabilities": ("vulnerability-scanning", "dependency-audit", "secret-detection"),
    },
    "performance-monitor": {
        "type": "critic",
        "capabilities": ("performance-testing", "regression-detection"),
        "thresholds": {"p99": "1000ms", "throughput": "1000 req/s"},
    },
    "roadmap-tracker": {
        "type": "observer",
        "capabilities": ("progress-tracking", "milestone-monitoring"),
        "integrations": ("gitlab-issues", "gitlab-milestones"),
    },
    "metrics-collector": {
        "type": "observer",
        "capabilities": ("metric-aggregation", "time-series-storage"),
        "outputs": ("prometheus", "grafana"),
    },
}
WORKFLOW_AGENTS = {"api-first-enforcer": "governor", "quality-gate-enforcer": "governor"}
LIST_FIELDS = ("capabilities", "rules", "dependencies", "integrations", "outputs")


@pytest.fixture(scope="module")
def shipped() -> dict[str, AgentManifest]:
    return {m.name: m for m in load_manifests()}


def problems_of(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "agent.yaml")
    return info.value.problems


# -- the shipped manifests ----------------------------------------------------------


def test_every_shipped_manifest_loads_and_is_named_after_its_file():
    paths = sorted(builtin_manifests_dir().glob("*.yaml"))
    assert len(paths) == len(DOCUMENT) + len(WORKFLOW_AGENTS)
    for path in paths:
        assert load_manifest(path).name == path.stem


@pytest.mark.parametrize("name", sorted(DOCUMENT))
def test_document_agents_have_exactly_the_documents_fields(shipped, name):
    manifest = shipped[name]
    expected = DOCUMENT[name]
    assert manifest.type == expected["type"]
    for field in LIST_FIELDS:
        assert getattr(manifest, field) == expected.get(field, ()), field
    assert manifest.thresholds == expected.get("thresholds", {})


def test_workflow_agents_have_manifests(shipped):
    assert {n: shipped[n].type for n in WORKFLOW_AGENTS} == WORKFLOW_AGENTS
    text = (builtin_manifests_dir() / "api-first-enforcer.yaml").read_text()
    assert "Feature Development Workflow" in text.splitlines()[0]


def test_performance_monitor_thresholds_parse_to_numbers_with_units(shipped):
    assert shipped["performance-monitor"].parsed_thresholds == {
        "p99": Threshold(1000.0, "ms"),
        "throughput": (1000, "req/s"),
    }


def test_every_catalog_agent_has_a_manifest_and_vice_versa(shipped):
    assert set(AGENTS) == set(shipped)


def test_shipped_resources_are_requests_within_twice_limits(shipped):
    for manifest in shipped.values():
        res = manifest.resources
        assert res.limits is not None, manifest.name
        assert 250 <= res.cpu_millicores() <= 1000
        assert 256 * 2**20 <= res.memory_bytes() <= 2**30
        assert res.limits.cpu_millicores() == 2 * res.cpu_millicores()
        assert res.limits.memory_bytes() == 2 * res.memory_bytes()


def test_task_topic_and_group_follow_the_agent_name(shipped):
    manifest = shipped["tdd-enforcer"]
    assert manifest.task_topic == "bar.tasks.tdd-enforcer"
    assert manifest.group_id == "bar-agent-tdd-enforcer"


# -- values ---------------------------------------------------------------------------


def test_minimal_manifest_gets_default_resources():
    manifest = parse_manifest("manifest:\n  name: x\n  type: worker\n")
    assert manifest.capabilities == ()
    assert manifest.resources == Resources(cpu="500m", memory="512Mi", limits=None)


@pytest.mark.parametrize(
    ("cpu", "millicores"), [("500m", 500), ("1", 1000), ("0.5", 500), (2, 2000), (0.25, 250)]
)
def test_cpu_quantities_convert_to_millicores(cpu, millicores):
    assert Resources.model_validate({"cpu": cpu}).cpu_millicores() == millicores


@pytest.mark.parametrize(
    ("memory", "size"),
    [("512Mi", 512 * 2**20), ("1Gi", 2**30), ("256M", 256 * 10**6), ("1k", 1000), (1024, 1024)],
)
def test_memory_quantities_convert_to_bytes(memory, size):
    assert Resources.model_validate({"memory": memory}).memory_bytes() == size


@pytest.mark.parametrize(
    ("text", "threshold"),
    [
        ("1000ms", (1000, "ms")),
        ("1000 req/s", (1000, "req/s")),
        ("0.95", (0.95, "")),
        ("80%", (80, "%")),
    ],
)
def test_thresholds_parse_to_value_and_unit(text, threshold):
    assert Threshold.parse(text) == threshold


def test_numeric_threshold_is_kept_as_written_text():
    manifest = parse_manifest("manifest:\n  name: x\n  type: critic\n  thresholds: {ratio: 0.95}\n")
    assert manifest.thresholds == {"ratio": "0.95"}
    assert manifest.parsed_thresholds == {"ratio": (0.95, "")}


def test_limits_below_requests_are_rejected_in_python_too():
    with pytest.raises(ValidationError, match=r"limits\.memory"):
        Resources(memory="1Gi", limits=Limits(cpu="1", memory="512Mi"))


# -- errors: file:line:column and the field -----------------------------------------


def test_missing_name_and_type_point_at_the_manifest_mapping():
    assert problems_of("manifest:\n  capabilities: [a]\n") == [
        (2, 3, 'field "name": is missing (required: name, type)'),
        (2, 3, 'field "type": is missing (required: name, type)'),
    ]


def test_unknown_field_points_at_its_key_and_lists_the_allowed_ones():
    [(line, col, message)] = problems_of(
        "manifest:\n  name: x\n  type: worker\n  capabilitys: [a]\n"
    )
    assert (line, col) == (4, 3)
    assert message.startswith('field "capabilitys": unknown field; did you mean "capabilities"?')
    assert "(allowed: name, type, capabilities, rules, dependencies, thresholds" in message


def test_wrong_type_points_at_the_value():
    assert problems_of("manifest:\n  name: x\n  type: worker\n  capabilities: 5\n") == [
        (4, 17, 'field "capabilities": must be a list of text, got 5')
    ]


def test_invalid_type_lists_the_allowed_types():
    assert problems_of("manifest:\n  name: x\n  type: supervisor\n") == [
        (3, 9, 'field "type": must be one of governor, worker, critic, observer, got "supervisor"')
    ]


def test_invalid_cpu_and_memory_quantities_are_both_reported():
    text = "manifest:\n  name: x\n  type: worker\n  resources:\n    cpu: 500mc\n    memory: 512MB\n"
    [cpu, memory] = problems_of(text)
    assert cpu[:2] == (5, 10)
    assert cpu[2].startswith('field "resources.cpu": "500mc" is not a CPU quantity')
    assert memory[:2] == (6, 13)
    assert memory[2].startswith('field "resources.memory": "512MB" is not a memory quantity')


def test_limits_below_requests_point_at_each_limit():
    text = (
        "manifest:\n  name: x\n  type: worker\n  resources:\n    cpu: 500m\n    memory: 512Mi\n"
        "    limits:\n      cpu: 250m\n      memory: 256Mi\n"
    )
    assert problems_of(text) == [
        (
            8,
            12,
            'field "resources.limits.cpu": limit "250m" is below the request cpu "500m": '
            "raise the limit",
        ),
        (
            9,
            15,
            'field "resources.limits.memory": limit "256Mi" is below the request memory '
            '"512Mi": raise the limit',
        ),
    ]


def test_malformed_yaml_is_reported_where_the_parser_stopped():
    [(line, col, message)] = problems_of("manifest:\n  name: x\n  type: [worker\n")
    assert (line, col) == (4, 1)
    assert message.startswith("invalid YAML: expected ',' or ']'")


def test_file_without_manifest_key_says_to_add_it():
    [(line, col, message)] = problems_of("name: x\ntype: worker\n")
    assert (line, col) == (1, 1)
    assert message.startswith('no top-level "manifest:" key (found "name", "type")')


def test_all_problems_of_a_file_are_reported_at_once_with_the_file_name():
    text = "manifest:\n  name: Bad_Name\n  type: worker\n  rules: [a, [b]]\n  colour: red\n"
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "agents/manifests/bad.yaml")
    assert isinstance(info.value, BuildKitError)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        "agents/manifests/bad.yaml:2:9",
        "agents/manifests/bad.yaml:4:14",
        "agents/manifests/bad.yaml:5:3",
    ]
    assert 'field "rules[1]": must be text, got a list' in lines[1]


def test_duplicate_agent_names_across_files_name_both_files(tmp_path: Path):
    body = "manifest:\n  name: twin\n  type: worker\n"
    (tmp_path / "a.yaml").write_text(body)
    (tmp_path / "b.yaml").write_text("# the same agent again\n" + body)
    with pytest.raises(ManifestError) as info:
        load_manifests(tmp_path)
    [(line, col, message)] = info.value.problems
    assert info.value.source == str(tmp_path / "b.yaml")
    assert (line, col) == (3, 9)
    assert f'field "name": agent "twin" is already defined in {tmp_path / "a.yaml"}:2:9' in message

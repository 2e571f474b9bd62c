"""The contracts package: its public names, cheap import, models agreeing with their .avsc."""

from __future__ import annotations

import json
import subprocess
import sys

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

import buildkit.contracts
from buildkit.contracts import AgentRegistration, AgentTask, Event, event_types
from buildkit.contracts.avro_model import model_avro_schema
from buildkit.contracts.compat_check import model_differences
from buildkit.contracts.registration import default_subjects, lookup_ids, register_contracts
from schemas import HISTORY_DIR, SCHEMA_DIR

EXPECTED_CONTRACTS_EXPORTS = [
    "ActionKind",
    "ActionStatus",
    "AgentError",
    "AgentHeartbeat",
    "AgentKind",
    "AgentRegistration",
    "AgentResult",
    "AgentTask",
    "Codec",
    "Event",
    "GitLabAction",
    "GitLabActionOutcome",
    "GitLabEvent",
    "MetricRecommendation",
    "ReplicaEvent",
    "ReplicaEventKind",
    "ReplicaState",
    "ScalingAction",
    "ScalingDecisionEvent",
    "ScalingMetric",
    "SwarmCommand",
    "SwarmCommandKind",
    "TaskStatus",
    "WorkflowCommand",
    "WorkflowCommandKind",
    "WorkflowEvent",
    "WorkflowEventKind",
    "event_types",
    "register",
    "run_id_for_trigger",
]

EVENT_TYPES = sorted(event_types().values(), key=lambda m: m.__name__)
ids = [m.__name__ for m in EVENT_TYPES]


def test_contracts_package_exports_exactly_the_pinned_names() -> None:
    assert sorted(buildkit.contracts.__all__) == EXPECTED_CONTRACTS_EXPORTS
    for name in EXPECTED_CONTRACTS_EXPORTS:
        assert getattr(buildkit.contracts, name) is not None


def test_importing_contracts_loads_no_kafka_client_nor_avro_library() -> None:
    code = (
        "import sys, buildkit.contracts; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'confluent_kafka', 'fastavro', 'avro', 'httpx', 'typer', 'faust'}); "
        "print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_core_event_types_are_registered() -> None:
    assert ids == [
        "AgentHeartbeat",
        "AgentRegistration",
        "AgentResult",
        "AgentTask",
        "GitLabAction",
        "GitLabActionOutcome",
        "GitLabEvent",
        "ReplicaEvent",
        "ScalingDecisionEvent",
        "SwarmCommand",
        "WorkflowCommand",
        "WorkflowEvent",
    ]


@pytest.mark.parametrize("model", EVENT_TYPES, ids=ids)
def test_model_and_avsc_agree(model: type[Event]) -> None:
    schema = model.avro_schema()

    assert model_differences(model, schema) == []
    assert schema["name"] == model.__name__
    assert f"{schema['namespace']}.{schema['name']}" == model.avro_name()
    fastavro.parse_schema(schema)


@pytest.mark.parametrize("model", EVENT_TYPES, ids=ids)
def test_every_contract_has_its_current_version_recorded(model: type[Event]) -> None:
    stem = model.schema_file.removesuffix(".avsc")
    versions = sorted((HISTORY_DIR / stem).glob("v*.avsc"), key=lambda p: int(p.stem[1:]))

    assert versions, f"no history for {model.schema_file}"
    assert json.loads(versions[-1].read_text()) == json.loads(
        (SCHEMA_DIR / model.schema_file).read_text()
    )


def test_model_differences_name_the_field_and_ignore_docs() -> None:
    model = EVENT_TYPES[0]
    schema = model_avro_schema(model)
    schema["doc"] = "a different doc"
    assert model_differences(model, schema) == []

    schema["fields"][0]["type"] = "long"
    schema["fields"].append({"name": "extra", "type": "string"})
    found = dict(model_differences(model, schema))

    assert set(found) == {schema["fields"][0]["name"], "extra"}
    assert "in the schema but not in the model" in found["extra"]


def test_register_contracts_answers_one_id_per_subject_and_is_idempotent() -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://"})
    subjects = {f"t-{m.avro_name()}-value": m for m in EVENT_TYPES}

    first = register_contracts(client, subjects)
    again = register_contracts(client, subjects)

    assert first == again
    assert set(first) == set(subjects)
    assert len(set(first.values())) == len(subjects)
    found = lookup_ids(client, {s: m.avro_schema_str() for s, m in subjects.items()})
    assert found == first
    assert lookup_ids(client, {"t-nobody-value": EVENT_TYPES[0].avro_schema_str()}) == {
        "t-nobody-value": None
    }


def test_default_subjects_are_the_catalog_value_subjects() -> None:
    from buildkit.catalog import default_catalog

    subjects = default_subjects()
    assert subjects["bar.tasks.test-generator-value"] is AgentTask
    assert subjects["bar.agents.registry-value"] is AgentRegistration
    assert set(subjects.values()) == set(EVENT_TYPES)
    assert sorted(subjects) == sorted(
        f"{s.name}-value" for s in default_catalog() if s.value_type is not None
    )

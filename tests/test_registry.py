"""The schema registry server, driven by confluent-kafka's own client and serializers."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from buildkit.dev.procs import free_port, port_answers, wait_until


def task_schema(symbols: list[str], *extra_fields: dict[str, object]) -> str:
    """A small event record: an id, a status enum and any extra fields."""
    return json.dumps(
        {
            "type": "record",
            "name": "TaskFinished",
            "namespace": "io.buildkit.bar",
            "fields": [
                {"name": "task_id", "type": "string"},
                {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": symbols}},
                *extra_fields,
            ],
        }
    )


V1 = task_schema(["OK", "FAILED", "TIMED_OUT"])


def client(url: str, **conf: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url, **conf})


def registry_error(call: object, *args: object) -> SchemaRegistryError:
    with pytest.raises(SchemaRegistryError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


@contextmanager
def registry_server(database_url: str, log: Path, **env: str) -> Iterator[str]:
    """A second registry process of this test's own, on a free port."""
    port = free_port()
    full_env = {
        **os.environ,
        "BAR_DATABASE_URL": database_url,
        "BAR_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{port}",
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "buildkit.registry"], env=full_env, stdout=out, stderr=out
        )
        try:
            ready = wait_until(
                lambda: port_answers("127.0.0.1", port) or proc.poll() is not None, 20
            )
            assert ready and proc.poll() is None, log.read_text()
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


# --- the basics ----------------------------------------------------------------


def test_root_answers_empty_object_and_default_context(registry_url: str) -> None:
    assert httpx.get(f"{registry_url}/").json() == {}
    assert client(registry_url).get_contexts() == ["."]


def test_registered_schema_is_served_back_by_id_subject_and_version(
    registry_url: str, prefix: str
) -> None:
    sr = client(registry_url)
    subject = f"{prefix}-value"
    schema_id = sr.register_schema(subject, Schema(V1, "AVRO"))

    fresh = client(registry_url)  # no cache: every answer below comes from the server
    assert json.loads(fresh.get_schema(schema_id).schema_str) == json.loads(V1)
    latest = fresh.get_latest_version(subject)
    assert (latest.schema_id, latest.version, latest.subject) == (schema_id, 1, subject)
    assert fresh.get_version(subject, 1).schema_id == schema_id
    assert fresh.get_versions(subject) == [1]
    assert subject in fresh.get_subjects()
    found = fresh.lookup_schema(subject, Schema(V1, "AVRO"))
    assert (found.schema_id, found.version) == (schema_id, 1)
    assert fresh.get_subjects_by_schema_id(schema_id) == [subject]
    pairs = fresh.get_schema_versions(schema_id)
    assert [(p.subject, p.version) for p in pairs] == [(subject, 1)]


def test_same_schema_gets_same_id_without_a_new_version_whatever_its_formatting(
    registry_url: str, prefix: str
) -> None:
    reformatted = json.dumps(json.loads(V1), indent=4, sort_keys=True)
    first = client(registry_url).register_schema(f"{prefix}-a", Schema(V1, "AVRO"))
    again = client(registry_url).register_schema(f"{prefix}-a", Schema(reformatted, "AVRO"))
    other_subject = client(registry_url).register_schema(f"{prefix}-b", Schema(V1, "AVRO"))

    assert first == again == other_subject
    assert client(registry_url).get_versions(f"{prefix}-a") == [1]


def test_a_changed_default_is_a_different_schema(registry_url: str, prefix: str) -> None:
    sr = client(registry_url)
    one = sr.register_schema(
        prefix, Schema(task_schema(["OK"], {"name": "n", "type": "int", "default": 1}), "AVRO")
    )
    two = sr.register_schema(
        prefix, Schema(task_schema(["OK"], {"name": "n", "type": "int", "default": 2}), "AVRO")
    )
    assert one != two
    assert sr.get_versions(prefix) == [1, 2]


def test_avro_serializer_and_deserializer_round_trip_through_the_registry(
    registry_url: str, prefix: str
) -> None:
    topic = f"{prefix}.tasks.results"
    ctx = SerializationContext(topic, MessageField.VALUE)
    sr = client(registry_url)
    record = {"task_id": "t-1", "status": "TIMED_OUT"}

    payload = AvroSerializer(sr, V1)(record, ctx)
    decoded = AvroDeserializer(client(registry_url))(payload, ctx)

    assert decoded == record
    # Confluent wire format: magic byte 0, then the id the topic's subject got.
    magic, schema_id = struct.unpack(">bI", payload[:5])
    assert magic == 0
    assert schema_id == client(registry_url).get_latest_version(f"{topic}-value").schema_id


def test_serializers_fall_back_to_topic_name_because_associations_answer_404(
    registry_url: str, prefix: str
) -> None:
    err = registry_error(client(registry_url).get_associations_by_resource_name, prefix, "-")
    assert err.http_status_code == 404
    assert isinstance(err.error_code, int)


# --- compatibility -------------------------------------------------------------


def test_incompatible_registration_answers_409_naming_the_field(
    registry_url: str, prefix: str
) -> None:
    sr = client(registry_url)
    sr.register_schema(prefix, Schema(V1, "AVRO"))
    dropped_symbol = task_schema(["OK", "FAILED"])  # cannot read TIMED_OUT: not BACKWARD

    err = registry_error(sr.register_schema, prefix, Schema(dropped_symbol, "AVRO"))

    assert (err.http_status_code, err.error_code) == (409, 409)
    assert 'field "status"' in err.error_message
    assert "TIMED_OUT" in err.error_message
    assert sr.get_versions(prefix) == [1]


def test_compatible_evolution_adds_a_version(registry_url: str, prefix: str) -> None:
    sr = client(registry_url)
    first = sr.register_schema(prefix, Schema(V1, "AVRO"))
    evolved = task_schema(
        ["OK", "FAILED", "TIMED_OUT"], {"name": "note", "type": "string", "default": ""}
    )
    second = sr.register_schema(prefix, Schema(evolved, "AVRO"))
    assert second != first
    assert sr.get_versions(prefix) == [1, 2]
    assert sr.get_latest_version(prefix).schema_id == second


def test_missing_default_is_reported_by_test_compatibility(registry_url: str, prefix: str) -> None:
    sr = client(registry_url)
    sr.register_schema(prefix, Schema(V1, "AVRO"))
    no_default = Schema(
        task_schema(["OK", "FAILED", "TIMED_OUT"], {"name": "owner", "type": "string"}), "AVRO"
    )

    assert sr.test_compatibility(prefix, no_default) is False
    assert sr.test_compatibility_all_versions(prefix, no_default) is False
    assert sr.test_compatibility(prefix, Schema(V1, "AVRO")) is True
    verbose = httpx.post(
        f"{registry_url}/compatibility/subjects/{prefix}/versions/latest",
        params={"verbose": "true"},
        json={"schema": no_default.schema_str},
    ).json()
    assert verbose["is_compatible"] is False
    assert any('field "owner"' in m and "default" in m for m in verbose["messages"])


def test_subject_compatibility_level_decides_what_registers(registry_url: str, prefix: str) -> None:
    sr = client(registry_url)
    sr.register_schema(prefix, Schema(V1, "AVRO"))
    dropped_symbol = Schema(task_schema(["OK", "FAILED"]), "AVRO")  # FORWARD-compatible only

    assert sr.set_compatibility(prefix, "FORWARD") == {"compatibility": "FORWARD"}
    assert sr.get_compatibility(prefix) == "FORWARD"
    assert sr.register_schema(prefix, dropped_symbol) > 0
    sr.set_compatibility(prefix, "NONE")
    assert sr.register_schema(prefix, Schema(task_schema(["X"]), "AVRO")) > 0
    assert sr.get_versions(prefix) == [1, 2, 3]


def test_transitive_level_checks_every_earlier_version(registry_url: str, prefix: str) -> None:
    sr = client(registry_url)
    with_default = {"name": "n", "type": "int", "default": 0}
    sr.register_schema(prefix, Schema(V1, "AVRO"))
    sr.register_schema(
        prefix, Schema(task_schema(["OK", "FAILED", "TIMED_OUT"], with_default), "AVRO")
    )
    # Reads version 2 (n is there) but not version 1 (n missing, no default).
    needs_n = Schema(
        task_schema(["OK", "FAILED", "TIMED_OUT"], {"name": "n", "type": "int"}), "AVRO"
    )

    sr.set_compatibility(prefix, "BACKWARD")
    assert sr.test_compatibility_all_versions(prefix, needs_n) is True
    sr.set_compatibility(prefix, "BACKWARD_TRANSITIVE")
    assert sr.test_compatibility_all_versions(prefix, needs_n) is False
    err = registry_error(sr.register_schema, prefix, needs_n)
    assert err.http_status_code == 409
    assert "version 1" in err.error_message
    assert 'field "n"' in err.error_message


def test_global_level_defaults_to_backward_and_can_be_changed(registry_url: str) -> None:
    sr = client(registry_url)
    assert sr.get_compatibility() == "BACKWARD"
    try:
        assert sr.set_compatibility(level="full") == {"compatibility": "FULL"}
        assert sr.get_compatibility() == "FULL"
    finally:
        sr.set_compatibility(level="BACKWARD")
    assert sr.get_compatibility() == "BACKWARD"


def test_unknown_compatibility_level_is_rejected(registry_url: str, prefix: str) -> None:
    err = registry_error(client(registry_url).set_compatibility, prefix, "SIDEWAYS")
    assert (err.http_status_code, err.error_code) == (422, 42203)


# --- deletes -------------------------------------------------------------------


def test_soft_deleted_subject_disappears_until_asked_for(registry_url: str, prefix: str) -> None:
    sr = client(registry_url)
    schema_id = sr.register_schema(prefix, Schema(V1, "AVRO"))
    sr.register_schema(prefix, Schema(task_schema(["OK", "FAILED", "TIMED_OUT", "NEW"]), "AVRO"))

    assert sr.delete_subject(prefix) == [1, 2]

    assert prefix not in sr.get_subjects()
    assert prefix in sr.get_subjects(deleted=True)
    assert registry_error(sr.get_versions, prefix).error_code == 40401
    assert sr.get_versions(prefix, deleted=True) == [1, 2]
    assert client(registry_url).get_schema(schema_id).schema_str  # ids stay resolvable
    assert registry_error(sr.delete_subject, prefix).error_code == 40404
    # Re-registering (a fresh client: no cached id) continues the numbering, as Confluent does.
    assert client(registry_url).register_schema(prefix, Schema(V1, "AVRO")) == schema_id
    assert sr.get_versions(prefix) == [3]


def test_permanent_delete_needs_a_soft_delete_first(registry_url: str, prefix: str) -> None:
    sr = client(registry_url)
    sr.register_schema(prefix, Schema(V1, "AVRO"))
    assert registry_error(sr.delete_subject, prefix, True).error_code == 40405
    sr.delete_subject(prefix)
    assert sr.delete_subject(prefix, permanent=True) == [1]
    assert prefix not in sr.get_subjects(deleted=True)


def test_deleted_version_is_gone_and_latest_moves_back(registry_url: str, prefix: str) -> None:
    sr = client(registry_url)
    first = sr.register_schema(prefix, Schema(V1, "AVRO"))
    sr.register_schema(prefix, Schema(task_schema(["OK", "FAILED", "TIMED_OUT", "NEW"]), "AVRO"))

    assert sr.delete_version(prefix, 2) == 2

    assert sr.get_versions(prefix) == [1]
    assert client(registry_url).get_latest_version(prefix).schema_id == first
    assert registry_error(client(registry_url).get_version, prefix, 2).error_code == 40402
    assert registry_error(sr.delete_version, prefix, 2).error_code == 40406


# --- errors --------------------------------------------------------------------


def test_unknown_subject_version_and_id_answer_confluent_404s(
    registry_url: str, prefix: str
) -> None:
    sr = client(registry_url)
    unknown_subject = registry_error(sr.get_latest_version, f"{prefix}-nope")
    assert (unknown_subject.http_status_code, unknown_subject.error_code) == (404, 40401)
    assert f"{prefix}-nope" in unknown_subject.error_message

    sr.register_schema(prefix, Schema(V1, "AVRO"))
    unknown_version = registry_error(sr.get_version, prefix, 7)
    assert (unknown_version.http_status_code, unknown_version.error_code) == (404, 40402)

    unknown_id = registry_error(sr.get_schema, 2_000_000_000)
    assert (unknown_id.http_status_code, unknown_id.error_code) == (404, 40403)

    not_under_subject = registry_error(sr.lookup_schema, prefix, Schema(task_schema(["Z"]), "AVRO"))
    assert (not_under_subject.http_status_code, not_under_subject.error_code) == (404, 40403)


def test_invalid_version_answers_42202(registry_url: str, prefix: str) -> None:
    client(registry_url).register_schema(prefix, Schema(V1, "AVRO"))
    answer = httpx.get(f"{registry_url}/subjects/{prefix}/versions/zero")
    assert answer.status_code == 422
    assert answer.json()["error_code"] == 42202


@pytest.mark.parametrize(
    ("text", "schema_type", "says"),
    [
        ('{"type": "record", "name": "Broken"', "AVRO", "not JSON"),
        ('{"type": "record", "name": "NoFields"}', "AVRO", "fields"),
        (
            '{"type": "record", "name": "R", '
            '"fields": [{"name": "n", "type": "int", "default": "x"}]}',
            "AVRO",
            "Default",
        ),
        ('{"type": "no.such.Type"}', "AVRO", "no.such.Type"),
        ('{"type": "object"}', "JSON", "AVRO schemas only"),
    ],
)
def test_bad_schema_answers_422_with_42201(
    registry_url: str, prefix: str, text: str, schema_type: str, says: str
) -> None:
    err = registry_error(client(registry_url).register_schema, prefix, Schema(text, schema_type))
    assert (err.http_status_code, err.error_code) == (422, 42201)
    assert says in err.error_message
    assert prefix not in client(registry_url).get_subjects(deleted=True)


def test_unknown_path_answers_confluent_error_shape(registry_url: str) -> None:
    answer = httpx.get(f"{registry_url}/no/such/path")
    assert answer.status_code == 404
    assert answer.json() == {"error_code": 404, "message": "HTTP 404 Not Found"}


# --- references ----------------------------------------------------------------


def test_schema_with_a_reference_registers_and_serializes(registry_url: str, prefix: str) -> None:
    sr = client(registry_url)
    status = json.dumps(
        {
            "type": "enum",
            "name": "Status",
            "namespace": "io.buildkit.bar",
            "symbols": ["OK", "FAILED"],
        }
    )
    status_id = sr.register_schema(f"{prefix}-status", Schema(status, "AVRO"))
    using = json.dumps(
        {
            "type": "record",
            "name": "Done",
            "namespace": "io.buildkit.bar",
            "fields": [{"name": "status", "type": "io.buildkit.bar.Status"}],
        }
    )
    ref = SchemaReference("io.buildkit.bar.Status", f"{prefix}-status", 1)
    topic = f"{prefix}.done"

    done_id = sr.register_schema(f"{topic}-value", Schema(using, "AVRO", [ref]))

    fetched = client(registry_url).get_schema(done_id)
    assert [(r.name, r.subject, r.version) for r in fetched.references] == [
        ("io.buildkit.bar.Status", f"{prefix}-status", 1)
    ]
    assert sr.get_referenced_by(f"{prefix}-status", 1) == [done_id]
    assert done_id != status_id
    ctx = SerializationContext(topic, MessageField.VALUE)
    payload = AvroSerializer(
        sr,
        Schema(using, "AVRO", [ref]),
        conf={"auto.register.schemas": False, "use.latest.version": True},
    )({"status": "FAILED"}, ctx)
    assert AvroDeserializer(client(registry_url))(payload, ctx) == {"status": "FAILED"}


# --- concurrency, restarts, auth, startup ----------------------------------------


def race_registrations(url: str, subjects: list[str], schema: Schema) -> list[int | BaseException]:
    """Register ``schema`` under each subject from a thread each, all released at once."""
    barrier = threading.Barrier(len(subjects))
    results: list[int | BaseException] = []

    def register(subject: str) -> None:
        sr = client(url)  # a client each: no shared cache
        barrier.wait()
        try:
            results.append(sr.register_schema(subject, schema))
        except BaseException as exc:  # collected, asserted by the caller
            results.append(exc)

    threads = [threading.Thread(target=register, args=(s,)) for s in subjects]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_registrations_of_one_schema_get_one_id_and_one_version(
    registry_url: str, prefix: str
) -> None:
    for round_n in range(3):  # a few rounds: a race lost once could be won by luck
        same = f"{prefix}-r{round_n}"
        # Half the threads race on one subject, half on subjects of their own.
        subjects = [same if n % 2 else f"{same}-{n}" for n in range(8)]
        schema = Schema(task_schema(["OK", f"ROUND_{round_n}"]), "AVRO")

        results = race_registrations(registry_url, subjects, schema)

        assert [r for r in results if isinstance(r, BaseException)] == []
        assert len(results) == len(subjects)
        assert len(set(results)) == 1
        assert client(registry_url).get_versions(same) == [1]


def test_ids_survive_a_restart_of_the_registry(
    registry_url: str, database_url: str, prefix: str, tmp_path: Path
) -> None:
    schema_id = client(registry_url).register_schema(prefix, Schema(V1, "AVRO"))

    with registry_server(database_url, tmp_path / "second.log") as second_url:
        again = client(second_url)
        assert json.loads(again.get_schema(schema_id).schema_str) == json.loads(V1)
        assert again.register_schema(f"{prefix}-other", Schema(V1, "AVRO")) == schema_id
        assert again.get_latest_version(prefix).schema_id == schema_id


def test_basic_auth_is_required_when_configured(
    database_url: str, prefix: str, tmp_path: Path
) -> None:
    creds = {"BAR_SCHEMA_REGISTRY_USERNAME": "agent", "BAR_SCHEMA_REGISTRY_PASSWORD": "s3cret:x"}
    log = tmp_path / "auth.log"
    with registry_server(database_url, log, **creds) as url:
        anonymous = registry_error(client(url).get_subjects)
        assert (anonymous.http_status_code, anonymous.error_code) == (401, 401)
        wrong = registry_error(client(url, **{"basic.auth.user.info": "agent:nope"}).get_subjects)
        assert wrong.http_status_code == 401
        answer = httpx.get(url, auth=("agent", "s3cret"))
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Basic")

        allowed = client(url, **{"basic.auth.user.info": "agent:s3cret:x"})
        assert allowed.register_schema(prefix, Schema(V1, "AVRO")) > 0
        assert prefix in allowed.get_subjects()
    assert "s3cret" not in log.read_text()


def test_half_configured_auth_refuses_to_start(database_url: str) -> None:
    env = {
        **os.environ,
        "BAR_DATABASE_URL": database_url,
        "BAR_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{free_port()}",
        "BAR_SCHEMA_REGISTRY_USERNAME": "agent",
    }
    env.pop("BAR_SCHEMA_REGISTRY_PASSWORD", None)
    done = subprocess.run(
        [sys.executable, "-m", "buildkit.registry"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "BAR_SCHEMA_REGISTRY_PASSWORD" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_database_exits_non_zero_with_one_clear_line() -> None:
    dead = free_port()
    env = {
        **os.environ,
        "BAR_DATABASE_URL": f"postgresql://postgres:hunter2@127.0.0.1:{dead}/buildkit",
        "BAR_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{free_port()}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "buildkit.registry"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot reach Postgres" in lines[0]
    assert f"127.0.0.1:{dead}" in lines[0]
    assert "hunter2" not in done.stderr

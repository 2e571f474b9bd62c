"""The compatibility checker behind the registry and ``buildkit schemas check`` (no services)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import buildkit.registry
from buildkit.registry.compat import CompatibilityLevel, check_compatibility
from buildkit.registry.errors import InvalidCompatibilityLevel, InvalidSchema


def record(*fields: dict[str, object], name: str = "Task") -> str:
    return json.dumps({"type": "record", "name": name, "namespace": "io.x", "fields": list(fields)})


def status(*symbols: str) -> dict[str, object]:
    return {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": list(symbols)}}


ID = {"name": "id", "type": "string"}


def test_reader_enum_missing_a_writer_symbol_names_field_and_symbol() -> None:
    problems = check_compatibility(
        record(ID, status("OK")), [record(ID, status("OK", "TIMED_OUT"))]
    )
    assert problems == [
        'field "status": enum "io.x.Status" in the new schema cannot read symbol(s) "TIMED_OUT" '
        'written by version 1 (add them, or give the enum a "default")'
    ]


def test_enum_default_makes_unknown_symbols_readable() -> None:
    with_default = {
        "name": "status",
        "type": {"type": "enum", "name": "Status", "symbols": ["OK"], "default": "OK"},
    }
    assert (
        check_compatibility(record(ID, with_default), [record(ID, status("OK", "TIMED_OUT"))]) == []
    )


def test_added_field_without_default_breaks_backward_but_not_forward() -> None:
    old = record(ID)
    new = record(ID, {"name": "owner", "type": "string"})
    backward = check_compatibility(new, [old], "BACKWARD")
    assert len(backward) == 1
    assert backward[0].startswith('field "owner":')
    assert '"default"' in backward[0]
    assert check_compatibility(new, [old], "FORWARD") == []
    assert check_compatibility(new, [old], "NONE") == []


def test_removed_field_without_default_breaks_forward_and_full() -> None:
    old = record(ID, {"name": "owner", "type": "string"})
    new = record(ID)
    assert check_compatibility(new, [old], CompatibilityLevel.BACKWARD) == []
    forward = check_compatibility(new, [old], CompatibilityLevel.FORWARD)
    assert forward and 'field "owner"' in forward[0] and "version 1" in forward[0]
    assert check_compatibility(new, [old], CompatibilityLevel.FULL) == forward


def test_type_change_inside_nullable_nested_record_names_the_nested_path() -> None:
    def outer(inner_type: str) -> str:
        inner = {"type": "record", "name": "Inner", "fields": [{"name": "n", "type": inner_type}]}
        return record({"name": "inner", "type": ["null", inner], "default": None})

    assert check_compatibility(outer("long"), [outer("int")]) == []  # int promotes to long
    problems = check_compatibility(outer("int"), [outer("string")])
    assert problems == [
        'field "inner.n": type "int" in the new schema cannot read type "string" '
        "written by version 1"
    ]


def test_array_items_are_named_in_the_path() -> None:
    def tags(item: str) -> str:
        return record({"name": "tags", "type": {"type": "array", "items": item}})

    problems = check_compatibility(tags("int"), [tags("string")])
    assert len(problems) == 1
    assert problems[0].startswith('field "tags[]":')


def test_non_transitive_levels_only_check_the_latest_version() -> None:
    v1 = record(ID)
    v2 = record(ID, {"name": "n", "type": "int", "default": 0})
    v3 = record(ID, {"name": "n", "type": "int"})  # reads v2, not v1
    assert check_compatibility(v3, [v1, v2], "BACKWARD") == []
    transitive = check_compatibility(v3, [v1, v2], "BACKWARD_TRANSITIVE")
    assert len(transitive) == 1
    assert "version 1" in transitive[0]


def test_labels_name_the_existing_schemas() -> None:
    problems = check_compatibility(
        record(ID, status("OK")),
        [record(ID, status("OK", "GONE"))],
        "FULL",
        labels=["schemas/history/task/v1.avsc"],
    )
    assert problems
    assert all("schemas/history/task/v1.avsc" in p for p in problems)


def test_record_rename_needs_an_alias() -> None:
    renamed = record(ID, name="Job")
    problems = check_compatibility(renamed, [record(ID)])
    assert len(problems) == 1
    assert '"io.x.Job"' in problems[0] and '"io.x.Task"' in problems[0] and "aliases" in problems[0]
    aliased = json.dumps({**json.loads(renamed), "aliases": ["io.x.Task"]})
    assert check_compatibility(aliased, [record(ID)]) == []


def test_unparseable_schema_raises_invalid_schema_naming_which() -> None:
    with pytest.raises(InvalidSchema, match="version 1"):
        check_compatibility(record(ID), ['{"type": "record"'])
    with pytest.raises(InvalidSchema, match="the new schema"):
        check_compatibility('{"type": "nope"}', [record(ID)])


def test_unknown_level_is_rejected_with_the_allowed_ones() -> None:
    with pytest.raises(InvalidCompatibilityLevel, match="FULL_TRANSITIVE"):
        check_compatibility(record(ID), [record(ID)], "SIDEWAYS")


def test_level_parsing_is_case_insensitive() -> None:
    assert CompatibilityLevel.parse("full_transitive") is CompatibilityLevel.FULL_TRANSITIVE


def test_package_exports_and_checker_import_stays_cheap() -> None:
    assert buildkit.registry.__all__ == ["create_app"]
    assert callable(buildkit.registry.create_app)
    # `buildkit schemas check` imports the checker: that must not pull in the web server.
    code = "import sys, buildkit.registry.compat; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

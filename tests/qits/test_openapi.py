"""Loading OpenAPI documents, following their refs, bundling and synthesizing schemas."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from qits.errors import SpecError
from qits.openapi import load_spec, resource_names
from qits.openapi_schema import SchemaTools

SPECS = Path(__file__).parent / "specs"
ALL_SPECS = sorted(p for p in SPECS.rglob("*") if p.suffix in (".yaml", ".json"))


def test_yaml_and_json_documents_load_with_their_version() -> None:
    assert load_spec(SPECS / "petstore-3.0.yaml").version == "3.0"
    assert load_spec(SPECS / "users-3.1.yaml").version == "3.1"
    assert load_spec(SPECS / "published" / "uber.json").version == "3.0"
    assert load_spec(SPECS / "published" / "non-oauth-scopes.json").version == "3.1"


def test_yaml_integer_status_codes_and_dates_become_json_strings() -> None:
    spec = load_spec("openapi: 3.0.0\ninfo: {title: t, version: 2024-01-01}\npaths: {}\n")
    assert spec.document["info"]["version"] == "2024-01-01"
    spec = load_spec(
        {"openapi": "3.0.0", "paths": {"/a": {"get": {"responses": {200: {"description": "x"}}}}}}
    )
    assert list(spec.operations()[0].responses) == ["200"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"swagger": "2.0", "paths": {}}, "Swagger 2.0"),
        ({"openapi": "4.0.0"}, 'unsupported "openapi" version "4.0.0"'),
        ("- just\n- a list\n", "not a JSON/YAML object"),
    ],
)
def test_documents_that_are_not_openapi_3_are_errors_that_say_so(
    document: object, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(document)  # type: ignore[arg-type]


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read OpenAPI document"):
        load_spec(tmp_path / "nope.yaml")


def test_refs_into_another_file_are_followed(tmp_path: Path) -> None:
    (tmp_path / "common.yaml").write_text(
        "Error:\n  type: object\n  required: [code]\n  properties:\n"
        "    code: {type: integer}\n    detail: {$ref: '#/Detail'}\n"
        "Detail: {type: string, nullable: true}\n"
    )
    (tmp_path / "api.yaml").write_text(
        "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /x:\n    get:\n"
        "      responses:\n        '400':\n          description: bad\n          content:\n"
        "            application/json:\n              schema: {$ref: 'common.yaml#/Error'}\n"
    )
    spec = load_spec(tmp_path / "api.yaml")
    response, base = spec.operations()[0].responses["400"]
    schema = SchemaTools(spec).bundle(
        response["content"]["application/json"]["schema"], base, "response"
    )
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"code": 1, "detail": None})
    assert not validator.is_valid({"detail": "x"})


def test_openapi_30_dialect_becomes_json_schema_2020_12() -> None:
    spec = load_spec(
        {
            "openapi": "3.0.3",
            "paths": {},
            "components": {"schemas": {"N": {"$ref": "#/components/schemas/M"}, "M": {}}},
        }
    )
    tools = SchemaTools(spec)
    schema = tools.bundle(
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
                "s": {"type": "string", "enum": ["a"], "nullable": True},
                "r": {"allOf": [{"$ref": "#/components/schemas/N"}], "nullable": True},
            },
            "example": {"n": 1},
        },
        spec.base_uri,
        "response",
    )
    props = schema["properties"]
    assert props["n"] == {"type": "integer", "exclusiveMinimum": 0}
    assert props["s"] == {"type": ["string", "null"], "enum": ["a", None]}
    assert props["r"]["anyOf"][1] == {"type": "null"}
    assert "example" not in schema
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"n": 1, "s": None, "r": None})
    assert not validator.is_valid({"n": 0})


def test_recursive_schemas_bundle_and_synthesize() -> None:
    spec = load_spec(SPECS / "users-3.1.yaml")
    tools = SchemaTools(spec)
    ref = {"$ref": "#/components/schemas/User"}
    schema = tools.bundle(ref, spec.base_uri, "response")
    assert set(schema["$defs"]) >= {"User", "UserInput", "Role"}
    value = tools.example(ref, spec.base_uri, "response")
    jsonschema.Draft202012Validator(schema).validate(value)


def test_request_values_leave_out_read_only_and_keep_write_only_properties() -> None:
    spec = load_spec(SPECS / "users-3.1.yaml")
    tools = SchemaTools(spec)
    body = tools.example({"$ref": "#/components/schemas/User"}, spec.base_uri, "request")
    assert "id" not in body and "createdAt" not in body
    assert body["password"] == "S3cret-passw0rd"
    assert body["role"] == "admin"
    assert body["contact"] == {"kind": "email", "email": "user@example.com"}
    fields, is_object = tools.request_fields({"$ref": "#/components/schemas/User"}, spec.base_uri)
    assert (fields, is_object) == (["name", "email", "role"], True)


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.name)
def test_synthesized_request_bodies_validate_against_their_schemas(path: Path) -> None:
    spec = load_spec(path)
    tools = SchemaTools(spec)
    for op in spec.operations():
        content = (op.request_body or {}).get("content") or {}
        for media_type, media in content.items():
            if "json" not in media_type or "schema" not in media:
                continue
            schema = tools.bundle(media["schema"], op.request_body_base, "request")
            value = tools.example(media["schema"], op.request_body_base, "request")
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
            assert not errors, (op.label, json.dumps(value), errors[0].message)


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["/pets", "/pets/{petId}"], {"/pets": "pets", "/pets/{petId}": "pets"}),
        (
            ["/api/users", "/api/users/{id}", "/api/health"],
            {"/api/users": "users", "/api/users/{id}": "users", "/api/health": "health"},
        ),
        (
            ["/", "/{dataset}/{version}/fields", "/{dataset}/{version}/records"],
            {
                "/": "root",
                "/{dataset}/{version}/fields": "fields",
                "/{dataset}/{version}/records": "records",
            },
        ),
        (
            ["/2.0/users/{u}", "/2.0/repositories/{u}/{slug}"],
            {"/2.0/users/{u}": "users", "/2.0/repositories/{u}/{slug}": "repositories"},
        ),
        (["/v1/Order-Items/{id}"], {"/v1/Order-Items/{id}": "order_items"}),
    ],
)
def test_resources_are_the_first_static_segment_after_the_shared_prefix(
    paths: list[str], expected: dict[str, str]
) -> None:
    assert resource_names(paths) == expected

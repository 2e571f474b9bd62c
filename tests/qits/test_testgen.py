"""Test generation from OpenAPI documents: what is generated, that it is stable, and that
the generated tests pass against a correct implementation and fail against broken ones."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import typer
import uvicorn
from fastapi import FastAPI, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from buildkit.dev.procs import free_port, wait_until
from qits.errors import SpecError
from qits.llm import LlmEnricher, LlmSettings
from qits.testgen import generate_tests
from qits.testgen_cli import generate_tests_command
from tests.qits.llm_double import LlmDouble, llm_double

SPECS = Path(__file__).parent / "specs"
PUBLISHED = sorted((SPECS / "published").glob("*.*[ln]"))
ALL_SPECS = [SPECS / "petstore-3.0.yaml", SPECS / "users-3.1.yaml", *PUBLISHED]


def operation_tests(result: Any) -> dict[str, list[str]]:
    return {op.operation: op.tests for op in result.operations}


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.name)
def test_every_document_generates_modules_that_compile(path: Path) -> None:
    result = generate_tests(path)
    assert result.files[0].path == "conftest.py"
    assert len(result.files) >= 2
    for file in result.files:
        tree = ast.parse(file.content, file.path)
        compile(tree, file.path, "exec")
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (
                node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
            )
        }
        allowed = {"__future__", "base64", "os", "re", "collections", "typing", "urllib"}
        assert imported <= allowed | {"httpx", "jsonschema", "pytest"}, (file.path, imported)


def test_published_documents_are_all_supported_or_reported() -> None:
    assert {p.name for p in PUBLISHED} >= {
        "petstore.yaml",
        "petstore-expanded.yaml",
        "api-with-examples.yaml",
        "callback-example.yaml",
        "link-example.yaml",
        "uspto.yaml",
        "webhook-example.yaml",
        "uber.json",
    }
    callbacks = generate_tests(SPECS / "published" / "callback-example.yaml")
    assert callbacks.unsupported == {
        "POST /streams": ["callbacks are requests the API sends; not tested"]
    }
    webhooks = generate_tests(SPECS / "published" / "webhook-example.yaml")
    assert "webhook newPet" in webhooks.unsupported
    uspto = operation_tests(generate_tests(SPECS / "published" / "uspto.yaml"))
    # A form-encoded body is sent as a form; a documented 404 gets its test.
    assert uspto["perform-search"] == [
        "test_perform_search_succeeds",
        "test_perform_search_not_found",
    ]


def test_the_same_document_gives_byte_identical_files(tmp_path: Path) -> None:
    for path in ALL_SPECS:
        first = generate_tests(path, tmp_path / path.name / "a")
        second = generate_tests(path.read_text(), tmp_path / path.name / "b")
        assert first.files == second.files
        for file in first.files:
            a = (tmp_path / path.name / "a" / file.path).read_bytes()
            assert a == (tmp_path / path.name / "b" / file.path).read_bytes()


def test_petstore_30_gets_every_kind_of_test() -> None:
    result = generate_tests(SPECS / "petstore-3.0.yaml")
    assert [f.path for f in result.files] == ["conftest.py", "test_pets.py"]
    assert operation_tests(result) == {
        "listPets": ["test_list_pets_succeeds"],
        "createPet": [
            "test_create_pet_succeeds",
            "test_create_pet_rejects_body_without_required_field",
        ],
        "showPetById": [
            "test_show_pet_by_id_succeeds",
            "test_show_pet_by_id_not_found",
            "test_show_pet_by_id_rejects_non_numeric_pet_id",
        ],
        "updatePet": [
            "test_update_pet_succeeds",
            "test_update_pet_not_found",
            "test_update_pet_rejects_non_numeric_pet_id",
            "test_update_pet_rejects_body_without_required_field",
        ],
        "deletePet": [
            "test_delete_pet_succeeds",
            "test_delete_pet_not_found",
            "test_delete_pet_rejects_non_numeric_pet_id",
        ],
    }
    update = next(op for op in result.operations if op.operation == "updatePet")
    assert update.not_provoked == ["409"]
    module = result.files[1].content
    assert "params = _create_pets(api)" in module
    assert "@pytest.mark.parametrize(\"field\", ['name', 'species'])" in module
    assert "params: dict[str, Any] = {'petId': 999999999}" in module


def test_users_31_gets_credential_tests_and_reports_its_webhook() -> None:
    result = generate_tests(SPECS / "users-3.1.yaml")
    tests = operation_tests(result)
    assert tests["getUser"] == [
        "test_get_user_succeeds",
        "test_get_user_not_found",
        "test_get_user_rejects_non_numeric_id",
        "test_get_user_requires_credentials",
    ]
    assert "test_create_user_requires_credentials" in tests["createUser"]
    assert result.unsupported == {
        "webhook userCreated": [
            "webhooks are requests the API sends; not tested".replace(
                "; not", "; nothing to call, not"
            )
        ]
    }
    health = next(op for op in result.operations if op.operation == "health")
    assert health.notes == ["response 200: media type text/plain not validated"]
    users = next(f.content for f in result.files if f.path == "test_users.py")
    assert "'nickname': {'type': ['string', 'null']}" in users
    assert "GET_USER_SECURITY: list[dict[str, Any]] | None = [{'bearerAuth': []}]" in users


def test_parts_the_generator_cannot_handle_are_reported_per_operation() -> None:
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "odd", "version": "1"},
        "paths": {
            "/upload": {
                "post": {
                    "operationId": "upload",
                    "requestBody": {
                        "required": True,
                        "content": {"multipart/form-data": {"schema": {"type": "object"}}},
                    },
                    "responses": {"201": {"description": "ok"}},
                }
            },
            "/search": {
                "get": {
                    "parameters": [
                        {
                            "name": "filter",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                        },
                        {"$ref": "#/components/parameters/Missing"},
                    ],
                    "responses": {"200": {"$ref": "#/components/responses/Gone"}},
                }
            },
            "/broken": {"get": {"parameters": "not a list", "responses": {}}},
            "/worse": {"get": {"responses": ["not", "a", "map"]}, "put": "no"},
            "/gone": {"$ref": "#/paths/~1nowhere"},
        },
    }
    result = generate_tests(spec)
    assert result.unsupported["upload"] == ["request body media type multipart/form-data"]
    assert operation_tests(result)["upload"] == []
    search = result.unsupported["GET /search"]
    assert 'parameter $ref "#/components/parameters/Missing" cannot be resolved' in search
    assert 'response 200: $ref "#/components/responses/Gone" cannot be resolved' in search
    assert "query parameter filter: object values" in search
    assert result.unsupported["GET /broken"] == ["parameters of GET /broken: not a list"]
    assert result.unsupported["GET /worse"][0].startswith("malformed operation")
    assert result.unsupported["PUT /worse"] == ["the operation is not an object"]
    assert result.unsupported["path /gone"] == ['$ref "#/paths/~1nowhere" cannot be resolved']


def test_swagger_20_is_refused_with_a_way_forward() -> None:
    with pytest.raises(SpecError, match=r"convert it to OpenAPI 3\.x"):
        generate_tests({"swagger": "2.0", "info": {}, "paths": {}})


def test_the_cli_writes_the_files_and_prints_what_it_could_not_handle(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("generate-tests")(generate_tests_command)
    app.command("noop")(lambda: None)  # keeps Typer from collapsing to a single command
    out = tmp_path / "gen"
    spec = SPECS / "published" / "callback-example.yaml"
    result = CliRunner().invoke(
        app, ["generate-tests", "--spec", str(spec), "--out", str(out), "--base-url", "http://x:1"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["conftest.py", "test_streams.py"]
    assert "DEFAULT_BASE_URL = 'http://x:1'" in (out / "conftest.py").read_text()
    assert "unsupported POST /streams: callbacks" in result.output
    missing = CliRunner().invoke(app, ["generate-tests", "--spec", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 1
    assert "cannot read OpenAPI document" in missing.output


# -- LLM enrichment ----------------------------------------------------------------------


def test_llm_suggestions_are_checked_against_the_schema_and_calls_are_traced() -> None:
    content = (
        '```json\n{"valid": [{"name": "Tom", "species": "cat"}, {"name": "", "species": "cat"}],'
        ' "invalid": [{"name": "Tom", "species": "whale"}, {"name": "Rex", "species": "dog"}]}\n```'
    )
    with llm_double(LlmDouble(content=content)) as double:
        enricher = LlmEnricher(LlmSettings(url=double.url, model="double-1"))
        result = generate_tests(SPECS / "petstore-3.0.yaml", llm=enricher)
    # createPet and updatePet have JSON bodies: one call each.
    assert [
        (c.operation, c.model, c.prompt_tokens, c.completion_tokens, c.outcome)
        for c in result.llm_calls
    ] == [
        ("createPet", "double-1", 120, 45, "ok"),
        ("updatePet", "double-1", 120, 45, "ok"),
    ]
    assert double.requests[0]["body"]["temperature"] == 0
    assert "JSON Schema" in double.requests[0]["body"]["messages"][0]["content"]
    create = next(op for op in result.operations if op.operation == "createPet")
    assert "test_create_pet_accepts_suggested_body" in create.tests
    assert "test_create_pet_rejects_suggested_invalid_body" in create.tests
    assert "LLM suggestions dropped after schema check: 2" in create.notes
    module = result.files[1].content
    assert "[{'name': 'Tom', 'species': 'cat'}]" in module
    assert "[{'name': 'Tom', 'species': 'whale'}]" in module


def test_a_failing_llm_endpoint_is_traced_and_generation_goes_on() -> None:
    with llm_double(LlmDouble(status=500)) as double:
        enricher = LlmEnricher(LlmSettings(url=double.url))
        result = generate_tests(SPECS / "petstore-3.0.yaml", llm=enricher)
    assert len(result.llm_calls) == 2
    assert all(c.outcome.startswith("HTTPStatusError") for c in result.llm_calls)
    assert all(c.prompt_tokens is None for c in result.llm_calls)
    assert result.files == generate_tests(SPECS / "petstore-3.0.yaml").files


def test_llm_enrichment_is_off_unless_bar_llm_url_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BAR_LLM_URL", raising=False)
    assert LlmSettings().url is None
    monkeypatch.setenv("BAR_LLM_URL", "http://127.0.0.1:9")
    assert LlmSettings().url == "http://127.0.0.1:9"


# -- generated tests against a live API ----------------------------------------------------


PetId = Annotated[int, PathParam(alias="petId")]


class NewPet(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    species: Literal["dog", "cat", "bird"]
    tag: str | None = None
    age: int | None = Field(default=None, ge=0, le=40)


def petstore_app(broken: str | None = None) -> FastAPI:
    """A hand-written implementation of specs/petstore-3.0.yaml, optionally broken."""
    app = FastAPI()
    pets: dict[int, dict[str, Any]] = {}

    def missing(pet_id: int) -> JSONResponse:
        return JSONResponse({"code": 404, "message": f"no pet {pet_id}"}, status_code=404)

    def shown(pet: dict[str, Any]) -> dict[str, Any]:
        if broken == "missing-field":
            return {k: v for k, v in pet.items() if k != "name"}
        return pet

    @app.get("/pets")
    def list_pets(limit: int | None = None) -> list[dict[str, Any]]:
        return [shown(p) for p in pets.values()][:limit]

    @app.post("/pets", status_code=200 if broken == "wrong-status" else 201)
    def create_pet(pet: NewPet) -> dict[str, Any]:
        pet_id = len(pets) + 1
        pets[pet_id] = {"id": pet_id, **pet.model_dump()}
        return pets[pet_id]

    @app.get("/pets/{petId}", response_model=None)
    def show_pet(pet_id: PetId) -> dict[str, Any] | JSONResponse:
        return shown(pets[pet_id]) if pet_id in pets else missing(pet_id)

    @app.put("/pets/{petId}", response_model=None)
    def update_pet(pet_id: PetId, pet: NewPet) -> dict[str, Any] | JSONResponse:
        if pet_id not in pets:
            return missing(pet_id)
        pets[pet_id] = {"id": pet_id, **pet.model_dump()}
        return pets[pet_id]

    @app.delete("/pets/{petId}", status_code=204, response_model=None)
    def delete_pet(pet_id: PetId) -> Response | JSONResponse:
        if pets.pop(pet_id, None) is None:
            return missing(pet_id)
        return Response(status_code=204)

    return app


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free port; yield its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, timeout=10), "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_generated(directory: Path, base_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--base-url", base_url],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def petstore_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("petstore-tests")
    generate_tests(SPECS / "petstore-3.0.yaml", out)
    return out


def test_generated_tests_pass_against_a_correct_implementation(petstore_tests: Path) -> None:
    with serving(petstore_app()) as url:
        run = run_generated(petstore_tests, url)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "15 passed" in run.stdout, run.stdout


@pytest.mark.parametrize(
    ("broken", "failing"),
    [
        ("wrong-status", ["test_create_pet_succeeds"]),
        ("missing-field", ["test_show_pet_by_id_succeeds"]),
    ],
)
def test_generated_tests_fail_against_a_broken_implementation(
    petstore_tests: Path, broken: str, failing: list[str]
) -> None:
    with serving(petstore_app(broken)) as url:
        run = run_generated(petstore_tests, url)
    assert run.returncode == 1, run.stdout + run.stderr
    failed = sorted(
        line.split("::")[1].split(" ")[0]
        for line in run.stdout.splitlines()
        if line.startswith("FAILED ")
    )
    assert failed == failing, run.stdout


def test_generated_tests_take_the_base_url_from_the_environment(
    petstore_tests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(petstore_app()) as url:
        monkeypatch.setenv("BAR_QITS_BASE_URL", url)
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "list_pets"],
            cwd=petstore_tests,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stdout + run.stderr


class UserInput(BaseModel):
    name: str = Field(min_length=2)
    email: str
    role: Literal["admin", "member", "guest"]
    nickname: str | None = None
    birthday: str | None = None
    website: str | None = None
    contact: dict[str, Any] | None = None
    password: str | None = None


UserId = Annotated[int, PathParam(ge=1)]
TOKEN = "s3cret-token"


def users_app() -> FastAPI:
    """A hand-written implementation of specs/users-3.1.yaml with bearer auth."""
    app = FastAPI()
    users: dict[int, dict[str, Any]] = {}

    @app.middleware("http")
    async def bearer(request: Any, call_next: Any) -> Any:
        public = request.url.path == "/api/health"
        if not public and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return JSONResponse(
                {"title": "Unauthorized", "status": 401},
                status_code=401,
                media_type="application/problem+json",
            )
        return await call_next(request)

    def stored(user_id: int, user: UserInput) -> dict[str, Any]:
        shown = user.model_dump(exclude={"password"}, exclude_none=True)
        users[user_id] = {"id": user_id, "createdAt": "2024-01-01T00:00:00Z", **shown}
        return users[user_id]

    @app.get("/api/health")
    def health() -> Response:
        return Response("up", media_type="text/plain")

    @app.get("/api/users")
    def list_users() -> list[dict[str, Any]]:
        return list(users.values())

    @app.post("/api/users", status_code=201)
    def create_user(user: UserInput) -> dict[str, Any]:
        return stored(len(users) + 1, user)

    @app.get("/api/users/{user_id}", response_model=None)
    def get_user(user_id: UserId) -> dict[str, Any] | Response:
        return users[user_id] if user_id in users else Response(status_code=404)

    @app.put("/api/users/{user_id}", response_model=None)
    def replace_user(user_id: UserId, user: UserInput) -> dict[str, Any] | Response:
        return stored(user_id, user) if user_id in users else Response(status_code=404)

    @app.delete("/api/users/{user_id}", status_code=204, response_model=None)
    def delete_user(user_id: UserId) -> Response:
        return Response(status_code=204 if users.pop(user_id, None) else 404)

    return app


def test_generated_31_tests_pass_with_credentials_and_skip_without(tmp_path: Path) -> None:
    generate_tests(SPECS / "users-3.1.yaml", tmp_path)
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAR_QITS_")}
    with serving(users_app()) as url:
        env["BAR_QITS_BASE_URL"] = url
        anonymous = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        env["BAR_QITS_TOKEN"] = TOKEN
        authorised = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    assert authorised.returncode == 0, authorised.stdout + authorised.stderr
    assert "21 passed" in authorised.stdout, authorised.stdout
    # Without a token only the health check and the credential tests can run.
    assert anonymous.returncode == 0, anonymous.stdout + anonymous.stderr
    assert "4 passed, 17 skipped" in anonymous.stdout, anonymous.stdout
    assert "requires credentials (bearerAuth): set BAR_QITS_TOKEN" in anonymous.stdout

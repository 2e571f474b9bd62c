"""The api-builder: built apps serve the spec (CRUD, documented errors, security), the
build is deterministic, published specs build with a report, and the tests generated
from a spec pass against the app built from it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from buildkit.dev.procs import free_port, wait_until
from qits.apibuild import BuiltApi, build_api
from qits.errors import SpecError

SPECS = Path(__file__).parent / "specs"
OWN = SPECS / "apibuild"
PUBLISHED = sorted(p for p in (SPECS / "published").iterdir() if p.suffix in {".yaml", ".json"})
PETSTORE = SPECS / "petstore-3.0.yaml" if (SPECS / "petstore-3.0.yaml").exists() else None
USERS = SPECS / "users-3.1.yaml" if (SPECS / "users-3.1.yaml").exists() else None
AUTH = {"Authorization": "Bearer anything"}
KEY = {"X-API-Key": "anything"}


@contextmanager
def serve(built: BuiltApi, log: Path) -> Iterator[httpx.Client]:
    """Run the built app with the documented uvicorn command; a client on its port."""
    port = free_port()
    with log.open("w") as sink:
        proc = subprocess.Popen(built.run_command(port), stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/openapi.json", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        if not wait_until(answers, timeout=30):
            raise AssertionError(f"built app did not start:\n{log.read_text()}")
        with httpx.Client(base_url=base, timeout=5) as client:
            yield client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def schema_check(spec_path: Path, name: str, body: Any) -> None:
    """Assert ``body`` validates against components/schemas/<name> of the spec."""
    spec = yaml.safe_load(spec_path.read_text())
    root = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    errors = [e.message for e in Draft202012Validator(root).iter_errors(body)]
    assert not errors, (body, errors)


@pytest.fixture(scope="module")
def petstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    work = tmp_path_factory.mktemp("petstore")
    with serve(build_api(OWN / "petstore-3.0.yaml", work / "api"), work / "server.log") as c:
        yield c


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    work = tmp_path_factory.mktemp("users")
    with serve(build_api(OWN / "users-3.1.yaml", work / "api"), work / "server.log") as c:
        yield c


def test_pet_survives_create_read_replace_delete(petstore: httpx.Client) -> None:
    created = petstore.post("/pets", json={"name": "Rex", "tag": "dog"}, headers=AUTH)
    assert created.status_code == 201
    pet = created.json()
    assert pet["name"] == "Rex" and isinstance(pet["id"], int)
    assert pet["status"] == "available", "the schema default fills a required response field"
    schema_check(OWN / "petstore-3.0.yaml", "Pet", pet)
    assert petstore.get(f"/pets/{pet['id']}").json() == pet
    assert pet in petstore.get("/pets").json()
    replaced = petstore.put(f"/pets/{pet['id']}", json={"name": "Max"}, headers=AUTH)
    assert replaced.status_code == 200
    assert replaced.json() == {"name": "Max", "status": "available", "id": pet["id"]}
    deleted = petstore.delete(f"/pets/{pet['id']}", headers=AUTH)
    assert deleted.status_code == 204 and deleted.content == b""
    assert petstore.get(f"/pets/{pet['id']}").status_code == 404


def test_pet_list_honours_limit(petstore: httpx.Client) -> None:
    for name in ("a", "b", "c"):
        petstore.post("/pets", json={"name": name}, headers=AUTH)
    assert len(petstore.get("/pets", params={"limit": 2}).json()) == 2
    assert petstore.get("/pets", params={"limit": 0}).status_code == 422


def test_missing_pet_answers_404_with_the_documented_error_body(petstore: httpx.Client) -> None:
    for response in (
        petstore.get("/pets/999999999"),
        petstore.put("/pets/999999999", json={"name": "x"}, headers=AUTH),
        petstore.delete("/pets/999999999", headers=AUTH),
    ):
        assert response.status_code == 404
        assert response.json() == {"code": 404, "message": "pet not found"}
        schema_check(OWN / "petstore-3.0.yaml", "Error", response.json())


def test_non_integer_pet_id_answers_422(petstore: httpx.Client) -> None:
    assert petstore.get("/pets/invalid").status_code == 422
    assert petstore.delete("/pets/invalid", headers=AUTH).status_code == 422


def test_pet_without_required_name_answers_422(petstore: httpx.Client) -> None:
    response = petstore.post("/pets", json={"tag": "dog"}, headers=AUTH)
    assert response.status_code == 422


def test_create_without_bearer_token_answers_401_with_error_body(petstore: httpx.Client) -> None:
    response = petstore.post("/pets", json={"name": "Rex"})
    assert response.status_code == 401
    schema_check(OWN / "petstore-3.0.yaml", "Error", response.json())
    empty = petstore.post("/pets", json={"name": "Rex"}, headers={"Authorization": "Basic abc"})
    assert empty.status_code == 401
    assert petstore.get("/pets").status_code == 200, "security: [] on the list opts out"


def test_stub_answers_a_schema_valid_body(petstore: httpx.Client) -> None:
    response = petstore.get("/pets/1/vaccinations")
    assert response.status_code == 200
    assert response.json() == {"petId": 0, "vaccinations": []}


def test_user_lifecycle_with_3_1_schemas(users: httpx.Client) -> None:
    body = {
        "username": "ada",
        "email": "ada@example.com",
        "role": "admin",
        "nickname": None,
        "contact": {"kind": "phone", "phone": "+44123456"},
    }
    created = users.post("/api/users", json=body, headers=KEY)
    assert created.status_code == 201
    user = created.json()
    schema_check(OWN / "users-3.1.yaml", "User", user)
    assert {k: user[k] for k in body} == body
    page = users.get("/api/users").json()
    assert page["total"] >= 1 and user in page["items"]
    patched = users.patch(f"/api/users/{user['id']}", json={"role": "guest"}, headers=KEY)
    assert patched.status_code == 200 and patched.json() == {**user, "role": "guest"}
    deleted = users.delete(f"/api/users/{user['id']}", headers=KEY)
    assert deleted.status_code == 200 and deleted.json()["role"] == "guest"
    missing = users.get(f"/api/users/{user['id']}")
    assert missing.status_code == 404
    schema_check(OWN / "users-3.1.yaml", "Problem", missing.json())


def test_user_body_is_validated_by_the_generated_models(users: httpx.Client) -> None:
    good = {"username": "bob", "email": "b@example.com", "role": "member"}
    for bad in (
        {"username": "bob", "email": "b@example.com"},
        {**good, "role": "owner"},
        {**good, "contact": {"kind": "phone", "phone": "12"}},
    ):
        response = users.post("/api/users", json=bad, headers=KEY)
        assert response.status_code == 422, bad
        schema_check(OWN / "users-3.1.yaml", "Problem", response.json())
    assert users.get("/api/users/abc").status_code == 422


def test_user_api_key_is_required_where_declared(users: httpx.Client) -> None:
    body = {"username": "bob", "email": "b@example.com", "role": "member"}
    response = users.post("/api/users", json=body)
    assert response.status_code == 401
    assert response.json() == {"status": 401, "title": "missing credentials"}
    assert users.post("/api/users", json=body, headers={"X-API-Key": ""}).status_code == 401
    assert users.get("/api/health").json() == {
        "status": "ok",
        "checkedAt": "1970-01-01T00:00:00Z",
    }


def test_report_says_which_operations_are_crud_and_which_stubs(tmp_path: Path) -> None:
    built = build_api(OWN / "petstore-3.0.yaml", tmp_path)
    kinds = {op.operation_id: op.kind for op in built.operations}
    assert kinds == {
        "listPets": "list",
        "createPet": "create",
        "showPetById": "read",
        "replacePet": "replace",
        "deletePet": "delete",
        "listVaccinations": "stub",
    }
    assert built.of("createPet").status == 201 and built.of("deletePet").status == 204
    assert {p.name for p in built.files} == {
        "models.py",
        "_runtime.py",
        "app.py",
        "build-report.json",
    }
    assert "class NewPet(BaseModel)" in (tmp_path / "models.py").read_text()


def test_same_spec_gives_identical_files(tmp_path: Path) -> None:
    for spec in (OWN / "petstore-3.0.yaml", OWN / "users-3.1.yaml"):
        one = build_api(spec, tmp_path / "one")
        two = build_api(yaml.safe_load(spec.read_text()), tmp_path / "two")
        for a, b in zip(one.files, two.files, strict=True):
            assert a.read_bytes() == b.read_bytes(), a.name


def test_unreadable_spec_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="OpenAPI 3"):
        build_api({"swagger": "2.0"}, tmp_path)


def test_cli_builds_and_prints_the_run_command(tmp_path: Path) -> None:
    import typer

    from qits.apibuild_cli import build_api_command

    app = typer.Typer()
    app.command()(build_api_command)
    spec = OWN / "users-3.1.yaml"
    result = CliRunner().invoke(app, ["--spec", str(spec), "--out", str(tmp_path / "api")])
    assert result.exit_code == 0, result.output
    assert "create [/api/users]" in result.output
    assert "python -m uvicorn app:app --app-dir" in result.output
    missing = CliRunner().invoke(app, ["--spec", str(tmp_path / "nope.yaml"), "--out", "x"])
    assert missing.exit_code == 1


@pytest.mark.parametrize("spec", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_published_spec_builds_an_importable_app(spec: Path, tmp_path: Path) -> None:
    built = build_api(spec, tmp_path)
    loaded = yaml.safe_load(spec.read_text())
    declared = sum(
        1
        for item in (loaded.get("paths") or {}).values()
        for method in item
        if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace")
    )
    assert len(built.operations) == declared
    check = subprocess.run(
        [sys.executable, "-c", "import app; print(len(app.app.routes))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def _run_generated_tests(spec: Path, work: Path) -> subprocess.CompletedProcess[str]:
    from qits.testgen import generate_tests

    built = build_api(spec, work / "api")
    generate_tests(spec, work / "tests")
    with serve(built, work / "server.log") as client:
        env = {
            **os.environ,
            "BAR_QITS_BASE_URL": str(client.base_url).rstrip("/"),
            "BAR_QITS_TOKEN": "token",
            "BAR_QITS_API_KEY": "key",
            "BAR_QITS_USERNAME": "user",
            "BAR_QITS_PASSWORD": "password",
        }
        pytest_args = ["--rootdir", str(work / "tests"), str(work / "tests")]
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
            cwd=work / "tests",
            env=env,
            capture_output=True,
            text=True,
            timeout=170,
        )


@pytest.mark.parametrize(
    "spec",
    [OWN / "petstore-3.0.yaml", OWN / "users-3.1.yaml", PETSTORE, USERS],
    ids=["own-petstore", "own-users", "petstore-3.0", "users-3.1"],
)
def test_generated_tests_pass_against_the_built_api(spec: Path | None, tmp_path: Path) -> None:
    if spec is None:
        pytest.fail("the test-generation spec is missing from tests/qits/specs/")
    result = _run_generated_tests(spec, tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout

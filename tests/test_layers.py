"""The architecture's rules, enforced: dependencies point toward buildkit, imports stay cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
OUTER = ("streams", "agents", "connectors", "qits")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("buildkit"), ids=lambda p: str(p.relative_to(ROOT)))
def test_buildkit_imports_none_of_the_outer_packages(path: Path):
    outer = {m for m in imported_modules(path) if m.split(".")[0] in OUTER}
    assert not outer, f"{path.relative_to(ROOT)} imports {sorted(outer)}"


def test_connectors_never_import_each_other():
    for path in python_files("connectors"):
        parts = path.relative_to(ROOT / "connectors").parts
        if len(parts) < 2:
            continue
        own = parts[0]
        others = {
            m
            for m in imported_modules(path)
            if m.startswith("connectors.") and m.split(".")[1] != own
        }
        assert not others, f"{path} imports {sorted(others)}"


def test_importing_buildkit_loads_no_kafka_client_or_driver():
    code = (
        "import sys, buildkit, buildkit.settings, buildkit.contracts;"
        "heavy = [m for m in ('confluent_kafka', 'psycopg', 'fastapi', 'faust', 'httpx')"
        " if m in sys.modules];"
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""

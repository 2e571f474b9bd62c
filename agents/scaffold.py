"""Scaffold a new agent: what ``buildkit agents create`` writes.

``DIR/NAME/`` gets four files rendered from ``agents/templates/*.tmpl``:

- ``manifest.yaml``: the agent manifest (type, capabilities, resources with limits) with
  ``entrypoint: "<module>:<Class>"``;
- ``<module>.py``: an :class:`~agents.runtime.agent.Agent` subclass whose ``handle``
  parses ``task.parameters_json``, answers with metrics and an output reference, and
  raises :class:`~agents.runtime.agent.AgentFault` with stable codes on bad input;
- ``test_<module>.py``: its tests through :class:`~agents.runtime.testing.AgentTestContext`;
- ``README.md``: how to test, run locally and deploy it.

Templates are :class:`string.Template` files, not cookiecutter: four files with a
handful of ``$placeholders`` do not justify a dependency, and ``$`` leaves the braces of
the generated Python (f-strings, dicts) alone. The manifest is validated with the real
loader before anything is written, so a scaffold that would not load is never written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import get_args

from agents.runtime.manifest import AgentManifest, AgentType, parse_manifest
from buildkit.errors import BuildKitError

__all__ = ["AgentNames", "Scaffold", "ScaffoldError", "create_agent", "render_agent"]

# Lowercase kebab-case starting with a letter: a valid agent name (a DNS label, see
# agents.runtime.manifest) that also turns into a Python module name.
_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_MAX_NAME = 63
_PLAIN_ITEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/-]*")


class ScaffoldError(BuildKitError):
    """The agent cannot be scaffolded as asked: bad name, unknown type, folder exists."""


@dataclass(frozen=True)
class AgentNames:
    """The names derived from an agent name: ``echo-words`` is module ``echo_words_agent``,
    class ``EchoWordsAgent`` and fault codes ``echo_words.<what>``."""

    name: str
    module: str
    class_name: str
    code_prefix: str

    @classmethod
    def from_name(cls, name: str) -> AgentNames:
        """Validate ``name`` (lowercase kebab-case) and derive the Python names from it."""
        if len(name) > _MAX_NAME or not _NAME.fullmatch(name):
            raise ScaffoldError(
                f'"{name}" is not a valid agent name: use lowercase kebab-case — letters, '
                'digits and single "-" between words, starting with a letter, at most '
                f"{_MAX_NAME} characters{_suggest_name(name)}"
            )
        snake = name.replace("-", "_")
        # The suffix keeps the module from shadowing a stdlib or installed module
        # (an agent named "json" or "agents") when its folder is put on sys.path.
        module = snake if snake.endswith("_agent") else f"{snake}_agent"
        class_name = "".join(part[:1].upper() + part[1:] for part in module.split("_"))
        return cls(name=name, module=module, class_name=class_name, code_prefix=snake)


def _suggest_name(name: str) -> str:
    fixed = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:_MAX_NAME].rstrip("-")
    return f', e.g. "{fixed}"' if fixed and fixed != name and _NAME.fullmatch(fixed) else ""


@dataclass(frozen=True)
class Scaffold:
    """A rendered agent: its folder, its files (name to text) and its validated manifest."""

    folder: Path
    names: AgentNames
    files: dict[str, str]
    manifest: AgentManifest

    @property
    def manifest_path(self) -> Path:
        """Where ``manifest.yaml`` is (or will be) written."""
        return self.folder / "manifest.yaml"


def _template(name: str) -> Template:
    text = resources.files("agents").joinpath("templates", f"{name}.tmpl").read_text("utf-8")
    return Template(text)


def _capabilities_yaml(capabilities: tuple[str, ...]) -> str:
    if not capabilities:
        return "  capabilities: []\n"
    # Plain words stay plain like the shipped manifests; anything else is quoted (a JSON
    # string is a valid YAML double-quoted scalar), so ":" or "#" cannot change the YAML.
    items = "".join(
        f"    - {c if _PLAIN_ITEM.fullmatch(c) else json.dumps(c)}\n" for c in capabilities
    )
    return f"  capabilities:\n{items}"


def render_agent(
    name: str,
    agent_type: str,
    folder: Path,
    capabilities: tuple[str, ...] | list[str] = (),
) -> Scaffold:
    """Render (without writing) the scaffold of agent ``name`` for ``folder``.

    Raises :class:`ScaffoldError` for a bad name, type or capability, and the loader's
    :class:`~agents.runtime.manifest.ManifestError` if the manifest would not load.
    """
    names = AgentNames.from_name(name)
    types = get_args(AgentType)
    if agent_type not in types:
        raise ScaffoldError(
            f'unknown agent type "{agent_type}": use one of {", ".join(types)} (--type)'
        )
    cleaned = tuple(c.strip() for c in capabilities)
    if any(not c for c in cleaned):
        raise ScaffoldError("--capability must not be empty")
    values = {
        "name": names.name,
        "agent_type": agent_type,
        "module": names.module,
        "class_name": names.class_name,
        "code_prefix": names.code_prefix,
        "capabilities": _capabilities_yaml(tuple(dict.fromkeys(cleaned))),
    }
    files = {
        "manifest.yaml": _template("manifest.yaml").substitute(values),
        f"{names.module}.py": _template("agent.py").substitute(values),
        f"test_{names.module}.py": _template("test_agent.py").substitute(values),
        "README.md": _template("README.md").substitute(values),
    }
    manifest = parse_manifest(files["manifest.yaml"], source=str(folder / "manifest.yaml"))
    return Scaffold(folder=folder, names=names, files=files, manifest=manifest)


def create_agent(
    name: str,
    agent_type: str,
    directory: Path | None = None,
    capabilities: tuple[str, ...] | list[str] = (),
    *,
    force: bool = False,
) -> Scaffold:
    """Write the scaffold of agent ``name`` to ``directory/name`` (default: the current
    directory) and return it.

    An existing folder is refused unless ``force``; with ``force`` the four generated
    files are overwritten and anything else in the folder is left alone.
    """
    folder = (directory if directory is not None else Path.cwd()) / name
    scaffold = render_agent(name, agent_type, folder, capabilities)
    if folder.exists() and not folder.is_dir():
        raise ScaffoldError(f"{folder} exists and is not a folder — choose another --dir or name")
    if folder.exists() and not force:
        raise ScaffoldError(
            f"{folder} already exists — pass --force to overwrite its generated files, "
            "or choose another --dir or --name"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, text in scaffold.files.items():
        (folder / file_name).write_text(text, encoding="utf-8")
    return scaffold

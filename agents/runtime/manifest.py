"""Agent manifests: what an agent is, what it may do and what it needs to run.

The YAML is the architecture document's ``manifest:`` block plus ``resources`` as in
``swarm.spawnAgent``::

    manifest:
      name: performance-monitor        # required: lowercase letters, digits and "-"
      type: critic                     # required: governor | worker | critic | observer
      capabilities: [performance-testing, regression-detection]
      rules: []                        # also dependencies, integrations, outputs: lists of text
      thresholds:                      # kept as written, parsed to Threshold(value, unit)
        p99: 1000ms                    #   -> Threshold(1000.0, "ms")
        throughput: 1000 req/s         #   -> Threshold(1000.0, "req/s")
      resources:                       # Kubernetes quantities; these are the defaults
        cpu: 500m
        memory: 512Mi
        limits: {cpu: 1000m, memory: 1Gi}   # optional; each at least its request
      entrypoint: my_agents.perf:PerformanceAgent   # optional: the Agent subclass that
                                       # `python -m agents.runtime.serve` runs
      policy:                          # optional mapping, kept as written: the agent
        coverage_threshold: 80         #   validates its own (e.g. the governors')

Every problem in a file is reported at once, one ``file:line:column: field "x.y": message``
line each (:class:`ManifestError`). Positions come from PyYAML's composed node tree: the
tree becomes plain data plus an index from field path to node, pydantic validates the
data, and each pydantic error's ``loc`` is looked up in the index.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from buildkit.catalog import task_topic_name
from buildkit.yaml_positions import TAG, PositionedError, describe_node

__all__ = [
    "AgentManifest",
    "AgentType",
    "Limits",
    "ManifestError",
    "Resources",
    "Threshold",
    "builtin_manifests_dir",
    "load_manifest",
    "load_manifests",
    "parse_manifest",
]

AgentType = Literal["governor", "worker", "critic", "observer"]

_MANIFESTS_DIR = Path(__file__).parent.parent / "manifests"
# A DNS label: it becomes part of topic, consumer-group and Kubernetes names.
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_CPU = re.compile(rf"({_NUMBER})(m?)")
_MEMORY = re.compile(rf"({_NUMBER})(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_MEMORY_UNITS = {
    "": 1,
    **{u: 1000 ** (i + 1) for i, u in enumerate("kMGTPE")},
    **{u + "i": 1024 ** (i + 1) for i, u in enumerate("KMGTPE")},
}
_ENTRYPOINT = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_THRESHOLD = re.compile(rf"([-+]?{_NUMBER}(?:[eE][-+]?\d+)?)\s*(.*)")


class ManifestError(PositionedError):
    """A manifest file has one or more problems, each as ``source:line:column: message``;
    a message about a field starts with ``field "resources.limits.memory":``."""


# -- quantities and thresholds ------------------------------------------------------


def _cpu_millicores(text: str) -> int:
    match = _CPU.fullmatch(text.strip())
    if match is None or Decimal(match.group(1)) <= 0:
        raise ValueError(
            f'"{text}" is not a CPU quantity: use cores or millicores above 0, e.g. 500m, 1 or 0.5'
        )
    number = Decimal(match.group(1))
    # Kubernetes rounds a finer request up to the next millicore.
    return math.ceil(number if match.group(2) else number * 1000)


def _memory_bytes(text: str) -> int:
    match = _MEMORY.fullmatch(text.strip())
    if match is None or Decimal(match.group(1)) <= 0:
        raise ValueError(
            f'"{text}" is not a memory quantity: use bytes or a suffix Ki, Mi, Gi, Ti '
            "(powers of 1024) or k, M, G, T (powers of 1000), e.g. 512Mi or 1Gi"
        )
    return math.ceil(Decimal(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""])


def _as_written(value: Any) -> Any:
    """YAML numbers as text (``cpu: 1`` is ``"1"``); anything else is left to validation."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _check(parse: Any) -> AfterValidator:
    def check(text: str) -> str:
        parse(text)
        return text

    return AfterValidator(check)


class Threshold(NamedTuple):
    """A threshold as a number and the unit written after it: ``1000 req/s`` is
    ``Threshold(1000.0, "req/s")``; a bare number has unit ``""``."""

    value: float
    unit: str

    @classmethod
    def parse(cls, text: str) -> Threshold:
        """Split ``text`` into number and unit; raises ValueError when it holds no number."""
        match = _THRESHOLD.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f'"{text}" is not a threshold: write a number, optionally followed by a '
                "unit, e.g. 1000ms, 1000 req/s or 0.95"
            )
        return cls(float(match.group(1)), match.group(2).strip())


_Cpu = Annotated[str, BeforeValidator(_as_written), _check(_cpu_millicores)]
_Memory = Annotated[str, BeforeValidator(_as_written), _check(_memory_bytes)]
_ThresholdText = Annotated[str, BeforeValidator(_as_written), _check(Threshold.parse)]
_Item = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(
            f'"{name}" is not a valid agent name: use lowercase letters, digits and "-", '
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return name


def _check_entrypoint(text: str) -> str:
    if not _ENTRYPOINT.fullmatch(text):
        raise ValueError(
            f'"{text}" is not an entry point: write "module.path:ClassName", '
            'e.g. "my_agents.coverage:CoverageAgent"'
        )
    return text


# -- the models ---------------------------------------------------------------------


class Limits(BaseModel):
    """The most CPU and memory an agent replica may use (Kubernetes ``limits``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: _Cpu
    memory: _Memory

    def cpu_millicores(self) -> int:
        """The CPU limit in millicores: ``1`` is 1000, ``500m`` is 500."""
        return _cpu_millicores(self.cpu)

    def memory_bytes(self) -> int:
        """The memory limit in bytes: ``1Gi`` is 1073741824."""
        return _memory_bytes(self.memory)


class Resources(BaseModel):
    """CPU and memory an agent replica requests, as in ``swarm.spawnAgent``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: _Cpu = "500m"
    memory: _Memory = "512Mi"
    limits: Limits | None = None

    def cpu_millicores(self) -> int:
        """The CPU request in millicores: ``1`` is 1000, ``500m`` is 500."""
        return _cpu_millicores(self.cpu)

    def memory_bytes(self) -> int:
        """The memory request in bytes: ``512Mi`` is 536870912."""
        return _memory_bytes(self.memory)

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Resources:
        if self.limits is None:
            return self
        below = [
            (key, f'limit "{limit}" is below the request {key} "{request}": raise the limit')
            for key, limit, request, size in (
                ("cpu", self.limits.cpu, self.cpu, _cpu_millicores),
                ("memory", self.limits.memory, self.memory, _memory_bytes),
            )
            if size(limit) < size(request)
        ]
        if below:
            # ctx carries which limit, so the loader can point at it rather than at resources
            raise PydanticCustomError(
                "limit_below_request",
                "{message}",
                {"message": "; ".join(f"limits.{k}: {m}" for k, m in below), "below": below},
            )
        return self


class AgentManifest(BaseModel):
    """One agent: its name and role, what it can do, its rules and what it needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, AfterValidator(_check_name)]
    type: AgentType
    capabilities: tuple[_Item, ...] = ()
    rules: tuple[_Item, ...] = ()
    dependencies: tuple[_Item, ...] = ()
    thresholds: dict[str, _ThresholdText] = Field(default_factory=dict)
    integrations: tuple[_Item, ...] = ()
    outputs: tuple[_Item, ...] = ()
    resources: Resources = Field(default_factory=Resources)
    #: ``module.path:ClassName`` of the :class:`~agents.runtime.agent.Agent` subclass to run.
    entrypoint: Annotated[str, AfterValidator(_check_entrypoint)] | None = None
    #: Settings of the agent's rules, kept as written; the agent validates them with its
    #: own model when it starts (see :mod:`agents.governors`).
    policy: dict[str, Any] = Field(default_factory=dict)

    @property
    def task_topic(self) -> str:
        """The topic this agent takes tasks from: ``bar.tasks.<name>``."""
        return task_topic_name(self.name)

    @property
    def group_id(self) -> str:
        """The consumer group of this agent's replicas: ``bar-agent-<name>``."""
        return f"bar-agent-{self.name}"

    @cached_property
    def parsed_thresholds(self) -> dict[str, Threshold]:
        """``thresholds`` as numbers with units: ``{"p99": Threshold(1000.0, "ms")}``."""
        return {key: Threshold.parse(text) for key, text in self.thresholds.items()}


_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): AgentManifest,
    ("resources",): Resources,
    ("resources", "limits"): Limits,
}


# -- loading ------------------------------------------------------------------------


def builtin_manifests_dir() -> Path:
    """The directory of the manifests shipped with the package (``agents/manifests``)."""
    return _MANIFESTS_DIR


def load_manifest(path: str | os.PathLike[str]) -> AgentManifest:
    """Read and validate one manifest file; raises :class:`ManifestError`."""
    return _load(path)[0]


def parse_manifest(text: str, source: str = "<string>") -> AgentManifest:
    """Validate manifest YAML ``text``; ``source`` names it in error messages."""
    return _Loader(text, source).run()[0]


def load_manifests(directory: str | os.PathLike[str] | None = None) -> list[AgentManifest]:
    """Every ``*.yaml``/``*.yml`` manifest in ``directory`` (default: the built-in ones).

    Sorted by file name. Raises :class:`ManifestError` for the first file with
    problems, or when two files define the same agent name (naming both files).
    """
    folder = Path(directory) if directory is not None else _MANIFESTS_DIR
    if not folder.is_dir():
        raise ManifestError(os.fspath(folder), [(1, 1, "not a directory of agent manifests")])
    paths = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    seen: dict[str, tuple[str, int, int]] = {}
    manifests = []
    for path in paths:
        manifest, (line, col) = _load(path)
        if manifest.name in seen:
            first, first_line, first_col = seen[manifest.name]
            raise ManifestError(
                os.fspath(path),
                [
                    (
                        line,
                        col,
                        f'field "name": agent "{manifest.name}" is already defined in '
                        f"{first}:{first_line}:{first_col} — rename one of them",
                    )
                ],
            )
        seen[manifest.name] = (os.fspath(path), line, col)
        manifests.append(manifest)
    return manifests


def _load(path: str | os.PathLike[str]) -> tuple[AgentManifest, tuple[int, int]]:
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e)
        raise ManifestError(source, [(1, 1, f"cannot read the manifest file: {reason}")]) from e
    return _Loader(text, source).run()


def _field(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Loader:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.problems: list[tuple[int, int, str]] = []
        # field path (relative to manifest:) -> (key node or None, value node)
        self.nodes: dict[tuple[str | int, ...], tuple[yaml.Node | None, yaml.Node]] = {}
        self._constructor = yaml.constructor.SafeConstructor()

    def at(self, node: yaml.Node, path: tuple[str | int, ...] | None, message: str) -> None:
        mark = node.start_mark
        prefix = f'field "{_field(path)}": ' if path else ""
        self.problems.append((mark.line + 1, mark.column + 1, prefix + message))

    def run(self) -> tuple[AgentManifest, tuple[int, int]]:
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = f"invalid YAML: {e.problem or e.context or 'malformed'}"
            raise ManifestError(self.source, [(line, col, problem)]) from e
        if root is None:
            raise ManifestError(self.source, [(1, 1, 'the file is empty: expected "manifest:"')])
        body = self.body(root)
        if body is None:
            raise ManifestError(self.source, self.problems)
        data = self.plain(body, ())
        manifest = None
        try:
            manifest = AgentManifest.model_validate(data)
        except ValidationError as e:
            for error in e.errors():
                self.report(error)
        if self.problems or manifest is None:
            raise ManifestError(self.source, self.problems)
        mark = self.nodes[("name",)][1].start_mark
        return manifest, (mark.line + 1, mark.column + 1)

    def body(self, root: yaml.Node) -> yaml.Node | None:
        """The value of the top-level ``manifest:`` key, reporting anything else."""
        if not isinstance(root, yaml.MappingNode):
            self.at(root, None, f'expected a top-level "manifest:" key, got {describe_node(root)}')
            return None
        body = None
        keys = []
        for knode, vnode in root.value:
            keys.append(str(knode.value) if isinstance(knode, yaml.ScalarNode) else "?")
            if keys[-1] != "manifest":
                self.at(
                    knode, None, f'unknown top-level key "{keys[-1]}": only "manifest" is allowed'
                )
            elif body is not None:
                self.at(knode, None, '"manifest" is given twice')
            else:
                body = vnode
        if body is None:
            found = ", ".join(f'"{k}"' for k in keys)
            self.problems = [
                (
                    root.start_mark.line + 1,
                    root.start_mark.column + 1,
                    f'no top-level "manifest:" key (found {found}): put the agent\'s fields '
                    'under "manifest:"',
                )
            ]
        return body

    def plain(
        self, node: yaml.Node, path: tuple[str | int, ...], key: yaml.Node | None = None
    ) -> Any:
        """``node`` as plain data, indexing every node by its field path."""
        self.nodes[path] = (key, node)
        if isinstance(node, yaml.SequenceNode):
            return [self.plain(item, (*path, i)) for i, item in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            return self._constructor.construct_object(node)
        out: dict[str, Any] = {}
        first: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode) or knode.tag != TAG + "str":
                self.at(knode, path, f"keys must be text, got {describe_node(knode)}")
                continue
            name = knode.value
            if name in first:
                line = first[name].start_mark.line + 1
                self.at(knode, (*path, name), f"is given twice (first at line {line})")
                continue
            first[name] = knode
            out[name] = self.plain(vnode, (*path, name), knode)
        return out

    def report(self, error: ErrorDetails) -> None:
        kind = error["type"]
        path = tuple(p for p in error["loc"] if p != "[key]")
        ctx = error.get("ctx") or {}
        if kind == "limit_below_request":
            for key, message in ctx["below"]:
                where = (*path, "limits", key)
                self.at(self.node(where), where, message)
            return
        if kind == "missing":
            model = _MODELS.get(tuple(str(p) for p in path[:-1]))
            required = (
                [n for n, f in model.model_fields.items() if f.is_required()] if model else []
            )
            self.at(self.node(path[:-1]), path, f"is missing (required: {', '.join(required)})")
            return
        if kind == "extra_forbidden":
            model = _MODELS.get(tuple(str(p) for p in path[:-1]))
            allowed = list(model.model_fields) if model else []
            close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            self.at(
                self.node(path, key=True),
                path,
                f"unknown field{hint} (allowed: {', '.join(allowed)})",
            )
            return
        node = self.node(path, key="[key]" in error["loc"])
        if not path:  # the value of manifest: itself
            path = ("manifest",)
        got = describe_node(node)
        if kind in ("tuple_type", "list_type"):
            message = f"must be a list of text, got {got}"
        elif kind == "string_type":
            message = f"must be text, got {got}"
        elif kind in ("dict_type", "model_type", "model_attributes_type"):
            message = f"must be a mapping, got {got}"
        elif kind == "literal_error":
            message = f"must be one of {', '.join(get_args(AgentType))}, got {got}"
        elif kind == "string_too_short":
            message = "must not be empty"
        elif kind == "value_error":
            message = str(ctx.get("error", error["msg"]))
        else:
            message = error["msg"]
        self.at(node, path, message)

    def node(self, path: tuple[str | int, ...], key: bool = False) -> yaml.Node:
        """The node at ``path`` (its key node if ``key``), else its nearest indexed parent."""
        while path not in self.nodes:
            path = path[:-1]
        knode, vnode = self.nodes[path]
        return knode if key and knode is not None else vnode

"""Load and validate workflow YAML into a :class:`~streams.roe.model.WorkflowSpec`.

Every problem in a file is reported at once, each as ``file:line:column: message``
(:class:`~streams.roe.errors.WorkflowSpecError`). Positions come from PyYAML's composed
node tree (``yaml.compose``), which keeps each node's start mark; the tree is checked by
hand rather than loaded into dicts first, because a dict has forgotten where things were.

The YAML shape (the architecture document's, plus the ROE additions)::

    name: Feature Development Workflow     # required
    version: 0.1.0                         # required
    description: ...
    inputs: [issue_id]                     # or {issue_id: {required: true, default: "1"}}
    trigger:
      - event: issue.created               # a GitLab event kind, optional labels
        labels: [feature]
      - cron: "*/5 * * * *"                # five fields (or @hourly ...), checked by croniter
    stages:                                # required, at least one
      - name: api-design                   # required, unique: letters, digits, . _ -
        agent: api-first-enforcer          # required: a local agent, or ossa://<network>/<agent>
        dependencies: []                   # stage names; a lone string is a one-item list
        inputs: [openapi-spec.yaml]        # each must be an output of a (transitive) dependency
        outputs: [tests/]                  #   or a workflow input
        conditions: ["coverage >= 80%"]    # see streams.roe.conditions; all must pass
        timeout: 10m                       # seconds, or a duration: 500ms, 90s, 10m, 1h, 1h30m
        retries: 2                         # extra attempts after the first, >= 0
        backoff: {initial: 2s, multiplier: 2, max: 5m}
        on_failure: fail                   # fail | continue
        fallbackLocal: true                # ossa:// stages only: run a local agent if remote fails

Key spelling: single-word keys have one spelling. The two multi-word keys accept both
snake_case and camelCase — ``on_failure``/``onFailure`` and ``fallbackLocal``/
``fallback_local`` — because the architecture document itself writes ``fallbackLocal``
while the rest of our YAML is snake_case; giving both spellings in one stage is an error.
``fallbackLocal`` on a local agent is an error (it could only be a mistake). Inputs and
outputs are matched as exact strings (``tests/`` and ``tests`` differ).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from croniter import croniter
from pydantic import ValidationError

from buildkit.yaml_positions import TAG, describe_node, suggest
from streams.roe.conditions import parse_condition
from streams.roe.errors import ConditionError, WorkflowSpecError
from streams.roe.graph import ancestors, cycles, shortest_cycle
from streams.roe.model import (
    REMOTE_PREFIX,
    Backoff,
    InputSpec,
    StageSpec,
    TriggerSpec,
    WorkflowSpec,
)

__all__ = ["builtin_workflows", "load_workflow", "parse_duration", "parse_workflow"]

_WORKFLOWS_DIR = Path(__file__).parent / "workflows"

# canonical key -> accepted spellings
_TOP_KEYS = {k: (k,) for k in ("name", "version", "description", "inputs", "trigger", "stages")}
_STAGE_KEYS: dict[str, tuple[str, ...]] = {
    **{k: (k,) for k in ("name", "agent", "dependencies", "inputs", "outputs", "conditions")},
    **{k: (k,) for k in ("timeout", "retries", "backoff")},
    "on_failure": ("on_failure", "onFailure"),
    "fallback_local": ("fallbackLocal", "fallback_local"),
}
_BACKOFF_KEYS = {k: (k,) for k in ("initial", "multiplier", "max")}
_TRIGGER_KEYS = {k: (k,) for k in ("event", "labels", "cron")}
_INPUT_KEYS = {k: (k,) for k in ("required", "default")}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_OSSA = re.compile(r"ossa://([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def builtin_workflows() -> list[Path]:
    """The workflow files shipped with the package, sorted by name."""
    return sorted(_WORKFLOWS_DIR.glob("*.yml"))


def load_workflow(path: str | os.PathLike[str]) -> WorkflowSpec:
    """Read and validate a workflow file; raises :class:`WorkflowSpecError`."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e)
        raise WorkflowSpecError(source, [(1, 1, f"cannot read the workflow file: {reason}")]) from e
    return parse_workflow(text, source)


def parse_workflow(text: str, source: str = "<string>") -> WorkflowSpec:
    """Validate workflow YAML ``text``; ``source`` names it in error messages."""
    return _Checker(text, source).run()


def parse_duration(value: str) -> float:
    """Seconds in a duration like ``90s``, ``10m``, ``1h30m``, ``500ms`` or ``12.5``."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = list(_DURATION_PART.finditer(text))
    if not parts or "".join(p.group() for p in parts) != text:
        raise ValueError(f'"{value}" is not a duration: use seconds or e.g. 90s, 10m, 1h30m')
    return sum(float(p.group(1)) * _UNIT_S[p.group(2)] for p in parts)


@dataclass
class _Stage:
    """What the graph checks need from one stage, with nodes to point at."""

    name: str
    name_node: yaml.Node
    deps: list[tuple[str, yaml.Node]] = field(default_factory=list)
    inputs: list[tuple[str, yaml.Node]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


class _Checker:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.problems: list[tuple[int, int, str]] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def at(self, node: yaml.Node, message: str, column_offset: int = 0) -> None:
        mark = node.start_mark
        self.problems.append((mark.line + 1, mark.column + 1 + column_offset, message))

    # -- the document -------------------------------------------------------------

    def run(self) -> WorkflowSpec:
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = f"invalid YAML: {e.problem or e.context or 'malformed'}"
            if e.problem and e.context:
                cm = e.context_mark
                where = f" at line {cm.line + 1}, column {cm.column + 1}" if cm else ""
                problem += f" ({e.context}{where})"
            raise WorkflowSpecError(self.source, [(line, col, problem)]) from e
        if root is None:
            self.problems.append(
                (1, 1, "the file is empty: a workflow needs name, version, stages")
            )
            raise WorkflowSpecError(self.source, self.problems)
        keys = self.mapping(root, "the workflow", _TOP_KEYS, required=("name", "version", "stages"))
        data: dict[str, Any] = {}
        stages: list[tuple[dict[str, Any] | None, _Stage | None]] = []
        if keys is not None:
            for key in ("name", "version", "description"):
                if key in keys:
                    data[key] = self.string(keys[key][1], key, key == "version")
            if "inputs" in keys:
                data["inputs"] = self.workflow_inputs(keys["inputs"][1])
            if "trigger" in keys:
                data["trigger"] = self.triggers(keys["trigger"][1])
            if "stages" in keys:
                stages = self.stages(keys["stages"][0], keys["stages"][1])
        input_names = {i.name for i in data.get("inputs") or ()}
        self.check_graph([s for _, s in stages if s is not None], input_names)
        if self.problems:
            raise WorkflowSpecError(self.source, self.problems)
        data["stages"] = tuple(StageSpec(**fields) for fields, _ in stages if fields is not None)
        try:
            return WorkflowSpec(**data)
        except ValidationError as e:  # a check above is missing; still say where
            raise WorkflowSpecError(self.source, [(1, 1, f"invalid workflow: {e}")]) from e

    # -- typed values -------------------------------------------------------------

    def mapping(
        self,
        node: yaml.Node,
        what: str,
        allowed: Mapping[str, tuple[str, ...]],
        required: tuple[str, ...] = (),
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """Canonical key -> (key node, value node); reports unknown/duplicate/missing keys."""
        if not isinstance(node, yaml.MappingNode):
            self.at(node, f"{what} must be a mapping of keys, got {describe_node(node)}")
            return None
        canonical = {spelling: key for key, spellings in allowed.items() for spelling in spellings}
        found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            spelling = knode.value if isinstance(knode, yaml.ScalarNode) else None
            key = canonical.get(spelling) if isinstance(spelling, str) else None
            if key is None:
                names = ", ".join("/".join(s) for s in allowed.values())
                hint = suggest(str(spelling), list(canonical)) if spelling else ""
                self.at(knode, f'unknown key "{spelling}" in {what}{hint} (allowed: {names})')
            elif key in found:
                first = found[key][0]
                self.at(
                    knode,
                    f'"{spelling}" is given twice in {what} (first as "{first.value}" '
                    f"at line {first.start_mark.line + 1})",
                )
            else:
                found[key] = (knode, vnode)
        for key in required:
            if key not in found:
                self.at(node, f'{what} is missing the required key "{key}"')
        return found

    def scalar(self, node: yaml.Node) -> Any:
        return (
            self._constructor.construct_object(node) if isinstance(node, yaml.ScalarNode) else node
        )

    def string(self, node: yaml.Node, what: str, token: bool = False) -> str | None:
        """A non-empty text scalar (numbers keep their written form: ``version: 1.10``)."""
        if not isinstance(node, yaml.ScalarNode) or node.tag in (TAG + "null", TAG + "bool"):
            self.at(node, f"{what} must be text, got {describe_node(node)}")
            return None
        value = str(node.value).strip()
        if not value:
            self.at(node, f"{what} must not be empty")
            return None
        if token and re.search(r"\s", value):
            self.at(node, f'{what} must not contain spaces, got "{value}"')
            return None
        return value

    def strings(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
        """A list of text; a lone text is a one-item list, nothing is an empty list."""
        if isinstance(node, yaml.ScalarNode) and node.tag == TAG + "null":
            return []
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if isinstance(node, yaml.MappingNode):
            self.at(node, f"{what} must be a list, got a mapping")
            return []
        out = []
        for item in items:
            value = self.string(item, f"each entry of {what}")
            if value is not None:
                out.append((value, item))
        return out

    def integer(self, node: yaml.Node, what: str) -> int | None:
        if node.tag != TAG + "int" or (value := self.scalar(node)) < 0:
            self.at(node, f"{what} must be a whole number >= 0, got {describe_node(node)}")
            return None
        return int(value)

    def number(self, node: yaml.Node, what: str, minimum: float) -> float | None:
        numeric = node.tag in (TAG + "int", TAG + "float")
        if not numeric or not (value := self.scalar(node)) >= minimum:
            self.at(node, f"{what} must be a number >= {minimum:g}, got {describe_node(node)}")
            return None
        return float(value)

    def duration(self, node: yaml.Node, what: str, positive: bool) -> float | None:
        if node.tag in (TAG + "int", TAG + "float"):
            seconds = float(self.scalar(node))
        elif node.tag == TAG + "str":
            try:
                seconds = parse_duration(node.value)
            except ValueError as e:
                self.at(node, f"{what}: {e}")
                return None
        else:
            self.at(
                node, f"{what} must be seconds or a duration like 90s, got {describe_node(node)}"
            )
            return None
        if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
            bound = "greater than 0" if positive else ">= 0"
            self.at(node, f"{what} must be {bound}, got {describe_node(node)}")
            return None
        return seconds

    def boolean(self, node: yaml.Node, what: str) -> bool | None:
        if node.tag != TAG + "bool":
            self.at(node, f"{what} must be true or false, got {describe_node(node)}")
            return None
        return bool(self.scalar(node))

    # -- sections -----------------------------------------------------------------

    def workflow_inputs(self, node: yaml.Node) -> tuple[InputSpec, ...]:
        specs: list[InputSpec] = []
        seen: set[str] = set()
        if isinstance(node, yaml.MappingNode):
            entries = [(k, v) for k, v in node.value]
        else:
            entries = [(n, None) for _, n in self.strings(node, "inputs")]
        for name_node, spec_node in entries:
            name = self.string(name_node, "an input name", token=True)
            if name is None:
                continue
            if name in seen:
                self.at(name_node, f'input "{name}" is declared twice')
                continue
            seen.add(name)
            required, default = True, None
            if spec_node is not None and spec_node.tag != TAG + "null":
                keys = self.mapping(spec_node, f'input "{name}"', _INPUT_KEYS) or {}
                if "default" in keys:
                    default = self.string(keys["default"][1], f'the default of input "{name}"')
                    required = False
                if "required" in keys:
                    req = self.boolean(keys["required"][1], f'"required" of input "{name}"')
                    if req and default is not None:
                        self.at(
                            keys["required"][1], f'input "{name}" is required: drop its default'
                        )
                    required = bool(req) if req is not None else required
            specs.append(InputSpec(name=name, required=required, default=default))
        return tuple(specs)

    def triggers(self, node: yaml.Node) -> tuple[TriggerSpec, ...]:
        items = [node] if isinstance(node, yaml.MappingNode) else None
        if isinstance(node, yaml.SequenceNode):
            items = node.value
        if items is None:
            self.at(
                node,
                "trigger must be a list of {event, labels} or {cron}, got " + describe_node(node),
            )
            return ()
        out = []
        for item in items:
            keys = self.mapping(item, "a trigger", _TRIGGER_KEYS)
            if keys is None:
                continue
            if ("event" in keys) == ("cron" in keys):
                self.at(item, 'a trigger needs exactly one of "event" or "cron"')
                continue
            if "cron" in keys:
                if "labels" in keys:
                    self.at(keys["labels"][0], '"labels" only go with an "event" trigger')
                cron = self.cron(keys["cron"][1])
                if cron is not None:
                    out.append(TriggerSpec(cron=cron))
                continue
            event = self.string(keys["event"][1], "event", token=True)
            labels = (
                [v for v, _ in self.strings(keys["labels"][1], "labels")]
                if "labels" in keys
                else []
            )
            if event is not None:
                out.append(TriggerSpec(event=event, labels=tuple(labels)))
        return tuple(out)

    def cron(self, node: yaml.Node) -> str | None:
        expr = self.string(node, "cron")
        if expr is None:
            return None
        fields = expr.split()
        if not (len(fields) == 5 or (len(fields) == 1 and expr.startswith("@"))):
            self.at(node, f'cron "{expr}" must have 5 fields (minute hour day month weekday)')
            return None
        if not croniter.is_valid(expr):
            self.at(node, f'cron "{expr}" is not a valid schedule')
            return None
        return expr

    def stages(
        self, key_node: yaml.Node, node: yaml.Node
    ) -> list[tuple[dict[str, Any] | None, _Stage | None]]:
        if not isinstance(node, yaml.SequenceNode):
            if node.tag == TAG + "null":
                self.at(key_node, "stages is empty: a workflow needs at least one stage")
            else:
                self.at(node, f"stages must be a list of stages, got {describe_node(node)}")
            return []
        if not node.value:
            self.at(node, "stages is empty: a workflow needs at least one stage")
        return [self.stage(item, i + 1) for i, item in enumerate(node.value)]

    def stage(self, node: yaml.Node, number: int) -> tuple[dict[str, Any] | None, _Stage | None]:
        label = f"stage {number}"
        if isinstance(node, yaml.MappingNode):  # name it as written, for the key checks
            written = [v.value for k, v in node.value if k.value == "name"]
            if written and isinstance(written[0], str) and _NAME.fullmatch(written[0]):
                label = f'stage "{written[0]}"'
        keys = self.mapping(node, label, _STAGE_KEYS, required=("name", "agent"))
        if keys is None:
            return None, None
        before = len(self.problems)
        name = self.string(keys["name"][1], "a stage name") if "name" in keys else None
        if name is not None and not _NAME.fullmatch(name):
            self.at(
                keys["name"][1], f'stage name "{name}" may only hold letters, digits, ".", "_", "-"'
            )
            name = None
        what = f'stage "{name}"' if name else f"stage {number}"
        fields: dict[str, Any] = {"name": name}
        if "agent" in keys:
            fields["agent"] = self.agent(keys["agent"][1], what)
        lists = {
            k: self.strings(keys[k][1], f"{k} of {what}")
            for k in ("dependencies", "inputs", "outputs", "conditions")
            if k in keys
        }
        for k, items in lists.items():
            fields[k] = tuple(v for v, _ in items)
        for text, cnode in lists.get("conditions", []):
            self.condition(text, cnode)
        if "timeout" in keys:
            fields["timeout_s"] = self.duration(keys["timeout"][1], f"timeout of {what}", True)
        if "retries" in keys:
            fields["retries"] = self.integer(keys["retries"][1], f"retries of {what}")
        if "backoff" in keys:
            fields["backoff"] = self.backoff(keys["backoff"][1], what)
        if "on_failure" in keys:
            vnode = keys["on_failure"][1]
            if vnode.tag != TAG + "str" or vnode.value not in ("fail", "continue"):
                self.at(
                    vnode,
                    f'{keys["on_failure"][0].value} of {what} must be "fail" or "continue", '
                    f"got {describe_node(vnode)}",
                )
            fields["on_failure"] = vnode.value
        if "fallback_local" in keys:
            knode, vnode = keys["fallback_local"]
            fields["fallback_local"] = self.boolean(vnode, f"{knode.value} of {what}")
            agent = fields.get("agent")
            if fields["fallback_local"] and agent and not agent.startswith(REMOTE_PREFIX):
                self.at(
                    knode,
                    f"{knode.value} only applies to ossa:// agents; "
                    f'{what} runs the local agent "{agent}"',
                )
        graph = None
        if name is not None:
            graph = _Stage(
                name,
                keys["name"][1],
                lists.get("dependencies", []),
                lists.get("inputs", []),
                [v for v, _ in lists.get("outputs", [])],
            )
        ok = len(self.problems) == before and "name" in keys and "agent" in keys
        return (fields if ok else None), graph

    def agent(self, node: yaml.Node, what: str) -> str | None:
        agent = self.string(node, f"the agent of {what}")
        if agent is None:
            return None
        if agent.startswith(REMOTE_PREFIX) or "://" in agent:
            if not _OSSA.fullmatch(agent):
                self.at(
                    node,
                    f'invalid agent address "{agent}": expected ossa://<network>/<agent>, e.g. ossa://production/deployer',
                )
                return None
        elif not _NAME.fullmatch(agent):
            self.at(
                node,
                f'invalid agent name "{agent}": use letters, digits, ".", "_", "-", or ossa://<network>/<agent>',
            )
            return None
        return agent

    def backoff(self, node: yaml.Node, what: str) -> Backoff | None:
        keys = self.mapping(node, f"backoff of {what}", _BACKOFF_KEYS)
        if keys is None:
            return None
        values: dict[str, float | None] = {}
        if "initial" in keys:
            values["initial_s"] = self.duration(
                keys["initial"][1], f"backoff initial of {what}", False
            )
        if "max" in keys:
            values["max_s"] = self.duration(keys["max"][1], f"backoff max of {what}", False)
        if "multiplier" in keys:
            values["multiplier"] = self.number(
                keys["multiplier"][1], f"backoff multiplier of {what}", 1
            )
        if any(v is None for v in values.values()):
            return None
        return Backoff(**values)

    def condition(self, text: str, node: yaml.Node) -> None:
        try:
            parse_condition(text)
        except ConditionError as e:
            start = self._text_start(node)
            offset = 0 if start is None else start + e.column - 1
            self.at(node, f'invalid condition "{text}": {e.message}', offset)

    def _text_start(self, node: yaml.Node) -> int | None:
        """Columns from a one-line scalar's mark to its first non-blank character.

        None when a column inside the text can't be mapped back to the file (block
        scalars, escapes, line folding): errors then point at the scalar itself.
        """
        raw = self.text[node.start_mark.index : node.end_mark.index]
        value = str(node.value)
        lead = len(value) - len(value.lstrip())
        if "\n" in raw:
            return None
        if raw == value:
            return lead
        if raw[:1] in ("'", '"') and raw[1:-1] == value:
            return 1 + lead
        return None

    # -- the dependency graph -----------------------------------------------------

    def check_graph(self, stages: list[_Stage], workflow_inputs: set[str]) -> None:
        by_name: dict[str, _Stage] = {}
        for stage in stages:
            if stage.name in by_name:
                first = by_name[stage.name].name_node.start_mark
                self.at(
                    stage.name_node,
                    f'duplicate stage name "{stage.name}" (first defined at line {first.line + 1})',
                )
            else:
                by_name[stage.name] = stage
        edges: dict[str, list[tuple[str, yaml.Node]]] = {}
        unresolved: set[str] = set()
        for stage in by_name.values():
            edges[stage.name] = []
            seen: set[str] = set()
            for dep, node in stage.deps:
                if dep == stage.name:
                    self.at(node, f'stage "{dep}" depends on itself')
                elif dep not in by_name:
                    hint = suggest(dep, list(by_name)) or f" (stages: {', '.join(by_name)})"
                    self.at(node, f'stage "{stage.name}" depends on unknown stage "{dep}"{hint}')
                    unresolved.add(stage.name)
                elif dep in seen:
                    self.at(node, f'stage "{stage.name}" lists dependency "{dep}" twice')
                else:
                    seen.add(dep)
                    edges[stage.name].append((dep, node))
        order = list(by_name)
        for component in cycles(edges):
            start = min(component, key=order.index)
            path = shortest_cycle(start, edges, set(component))
            node = next(n for d, n in edges[start] if d == path[1])
            self.at(node, f"dependency cycle: {' → '.join(path)} (each stage depends on the next)")
        for stage in by_name.values():
            upstream = ancestors(stage.name, edges)
            if upstream & unresolved or stage.name in unresolved:
                continue  # an unknown dependency is reported already; its outputs are unknowable
            available = set(workflow_inputs)
            for a in upstream:
                available.update(by_name[a].outputs)
            for item, node in stage.inputs:
                if item in available:
                    continue
                makers = [
                    s.name for s in by_name.values() if item in s.outputs and s.name != stage.name
                ]
                hint = f'; stage "{makers[0]}" outputs it: add it to dependencies' if makers else ""
                self.at(
                    node,
                    f'input "{item}" of stage "{stage.name}" is not an output of any stage it '
                    f"depends on, nor a workflow input{hint}",
                )

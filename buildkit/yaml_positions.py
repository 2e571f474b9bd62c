"""What every YAML file loader here shares (workflow specs, agent manifests): errors that
list each problem as ``source:line:column: message``, and how a node is described in them.

Loaders parse with PyYAML's ``compose`` so every node keeps its position (``start_mark``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import yaml

from buildkit.errors import BuildKitError

TAG = "tag:yaml.org,2002:"


class PositionedError(BuildKitError):
    """A file with one or more problems; all of them are listed, in file order.

    ``problems`` holds ``(line, column, message)`` triples (1-based); ``str()`` renders
    one ``source:line:column: message`` line each, the form editors and CI logs link.
    """

    def __init__(self, source: str, problems: Iterable[tuple[int, int, str]]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p[0], p[1]))
        super().__init__(
            "\n".join(f"{source}:{line}:{col}: {msg}" for line, col, msg in self.problems)
        )


def describe_node(node: yaml.Node) -> str:
    """How a node reads in an error message: ``a list``, ``"text"``, ``42``, ..."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == TAG + "null":
        return "nothing"
    if node.tag == TAG + "bool":
        return f"{node.value} (YAML reads it as a boolean; quote it if you meant text)"
    if node.tag == TAG + "str":
        return f'"{node.value}"'
    return str(node.value)


def suggest(word: str, choices: list[str]) -> str:
    """``; did you mean "x"?`` for the closest of ``choices``, or an empty string."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(f'"{by_lower[c]}"' for c in close) + "?"

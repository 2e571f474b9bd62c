"""ROE's exceptions: a workflow file that does not validate, a condition that does not parse."""

from __future__ import annotations

from buildkit.errors import BuildKitError
from buildkit.yaml_positions import PositionedError


class ConditionError(BuildKitError, ValueError):
    """A quality-gate condition does not parse.

    ``column`` is 1-based, counted in the condition's own text, so a caller that
    knows where the text sits (a YAML scalar) can point at the exact character.
    """

    def __init__(self, message: str, column: int, text: str | None = None) -> None:
        self.message = message
        self.column = column
        self.text = text
        where = f'in "{text}" ' if text is not None else ""
        super().__init__(f"invalid condition {where}at column {column}: {message}")


class WorkflowSpecError(PositionedError):
    """A workflow file has one or more problems, each as ``source:line:column: message``."""

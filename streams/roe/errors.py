"""ROE's exceptions: a workflow file that does not validate, a condition that does not parse."""

from __future__ import annotations

from collections.abc import Iterable

from buildkit.errors import BuildKitError


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


class WorkflowSpecError(BuildKitError):
    """A workflow file has one or more problems; all of them are listed, in file order.

    ``problems`` holds ``(line, column, message)`` triples (1-based); ``str()`` renders
    one ``source:line:column: message`` line each, the form editors and CI logs link.
    """

    def __init__(self, source: str, problems: Iterable[tuple[int, int, str]]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p[0], p[1]))
        super().__init__(
            "\n".join(f"{source}:{line}:{col}: {msg}" for line, col, msg in self.problems)
        )

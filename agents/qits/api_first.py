"""api-first-enforcer: no code before a valid, linted OpenAPI document.

Finds the run's document (see :mod:`agents.qits.spec` for the sources and lint
rules), validates it with openapi-spec-validator, lints it and writes it unchanged
as the ``openapi-spec.yaml`` artifact the later stages read.

Metrics: ``operations``, ``lint_violations``, ``validation_errors``. Faults:

* ``qits.spec_missing``: no ``spec`` input and no fenced spec in the issue;
* ``qits.spec_invalid``: not YAML/JSON, not valid OpenAPI, or (policy
  ``lint_fails``, default on) a lint violation — the message lists each problem
  with its path in the document.

When a GitLab issue started the run, a failure also posts a note on it saying
what to fix.
"""

from __future__ import annotations

from typing import ClassVar

from agents.qits.base import SPEC_ARTIFACT, QitsAgent, QitsPolicy
from agents.qits.inputs import QitsInput
from agents.qits.spec import Problem, check_spec, find_spec, operations, parse_spec
from agents.runtime.agent import AgentFault, TaskOutcome
from qits.errors import SpecError

__all__ = ["SPEC_INVALID", "SPEC_MISSING", "ApiFirstEnforcerAgent", "ApiFirstPolicy"]

SPEC_MISSING = "qits.spec_missing"
SPEC_INVALID = "qits.spec_invalid"


class ApiFirstPolicy(QitsPolicy):
    """How strict the api-first-enforcer is."""

    #: Lint violations fail the task; off: they are only counted in ``lint_violations``.
    lint_fails: bool = True


class ApiFirstEnforcerAgent(QitsAgent[ApiFirstPolicy]):
    """Validates and lints the run's OpenAPI document and publishes it as an artifact."""

    manifest_file: ClassVar[str] = "api-first-enforcer"
    policy_model = ApiFirstPolicy

    def run(self, inp: QitsInput, policy: ApiFirstPolicy) -> TaskOutcome:
        """See the module docstring."""
        found = find_spec(inp.spec, inp.event, lambda ref: inp.artifact("spec", self.store, ref))
        if found is None:
            message = (
                "no OpenAPI document: pass the `spec` workflow input (YAML/JSON text or a "
                "file reference) or put the spec in the issue description as a fenced "
                "```yaml block starting with `openapi: 3.0.3`"
            )
            raise AgentFault(SPEC_MISSING, message, actions=inp.note(_note(message, [])))
        text, source = found
        try:
            doc = parse_spec(text, source)
        except SpecError as exc:
            raise AgentFault(SPEC_INVALID, str(exc), actions=inp.note(_note(str(exc), []))) from exc
        errors, lint = check_spec(doc)
        count = sum(1 for _ in operations(doc))
        blocking = errors + (lint if policy.lint_fails else [])
        if blocking:
            message = (
                f"the OpenAPI document from {source} has {len(errors)} validation error(s) "
                f"and {len(lint)} lint violation(s): " + "; ".join(str(p) for p in blocking)
            )
            raise AgentFault(SPEC_INVALID, message, actions=inp.note(_note(source, blocking)))
        target = self.output(inp, SPEC_ARTIFACT)
        target.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        return TaskOutcome(
            metrics={
                "operations": float(count),
                "lint_violations": float(len(lint)),
                "validation_errors": 0.0,
            },
            outputs={SPEC_ARTIFACT: self.store.reference(target)},
        )


def _note(source_or_message: str, problems: list[Problem]) -> str:
    if not problems:
        return f"### :x: API design: no usable OpenAPI document\n\n{source_or_message}\n"
    rows = "\n".join(
        f"| `{p.path or '(document)'}` | {p.rule} | {p.message.replace('|', '/')} |"
        for p in problems
    )
    return (
        f"### :x: API design: the OpenAPI document needs changes\n\n"
        f"From {source_or_message}. Fix these and edit the issue (or pass a new `spec`):\n\n"
        f"| Where | Rule | Problem |\n|---|---|---|\n{rows}\n"
    )

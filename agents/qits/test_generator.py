"""test-generator: pytest modules from the run's OpenAPI document (:mod:`qits.testgen`).

Reads ``openapi-spec.yaml`` (the api-design stage's artifact, else the ``spec``
input) and writes the generated tests as the ``tests/`` artifact: ``conftest.py``
and one ``test_<resource>.py`` per resource, plus ``testgen-report.json`` (what
was generated per operation and what could not be). The tests are HTTP calls to
``BAR_QITS_BASE_URL``.

Metrics: ``tests`` (generated test functions), ``operations``, ``unsupported``
(spec features reported as not handled, summed over operations). Fault:
``qits.spec_invalid`` when the document is not OpenAPI 3.0/3.1.
"""

from __future__ import annotations

from typing import ClassVar

from agents.qits.base import QitsAgent, QitsPolicy, fault_from
from agents.qits.inputs import QitsInput
from agents.runtime.agent import TaskOutcome
from buildkit.errors import BuildKitError
from qits.testgen import generate_tests

__all__ = ["TESTS_ARTIFACT", "TestGeneratorAgent", "TestGeneratorPolicy"]

#: The artifact this agent writes (a directory).
TESTS_ARTIFACT = "tests/"


class TestGeneratorPolicy(QitsPolicy):
    """Settings of the test-generator (none beyond the common ones yet; the LLM
    enrichment of :mod:`qits.llm` is not wired in)."""

    __test__ = False


class TestGeneratorAgent(QitsAgent[TestGeneratorPolicy]):
    """Generates the HTTP tests of the run's API from its OpenAPI document."""

    __test__ = False  # a pytest collection hint: this is not a test class
    manifest_file: ClassVar[str] = "test-generator"
    policy_model = TestGeneratorPolicy

    def run(self, inp: QitsInput, policy: TestGeneratorPolicy) -> TaskOutcome:
        """See the module docstring."""
        spec = self.spec_of(inp)
        out = self.output(inp, TESTS_ARTIFACT)
        try:
            generated = generate_tests(spec, out)
        except BuildKitError as exc:  # qits' SpecError (qits.spec_invalid), LlmError
            raise fault_from(exc, "qits.spec_invalid") from exc
        (out / "testgen-report.json").write_text(
            generated.model_dump_json(indent=2, exclude={"files"}), encoding="utf-8"
        )
        return TaskOutcome(
            metrics={
                "tests": float(sum(len(op.tests) for op in generated.operations)),
                "operations": float(len(generated.operations)),
                "unsupported": float(sum(len(v) for v in generated.unsupported.values())),
            },
            outputs={TESTS_ARTIFACT: self.store.reference(out)},
        )

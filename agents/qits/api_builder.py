"""api-builder: a FastAPI implementation of the run's OpenAPI document (:mod:`qits.apibuild`).

Reads ``openapi-spec.yaml`` and writes the built package as the ``src/`` artifact
(``app.py``, ``models.py``, ``_runtime.py``, ``build-report.json``). With policy
``verify`` (default on) and a ``tests/`` input, it then serves the app and runs the
generated tests against it before answering, so a build that does not pass them
never reaches the quality gate.

Metrics: ``operations_implemented`` (CRUD-shaped operations), ``stubs`` (answering a
synthesized documented success), ``unsupported`` (left out), and with
verification ``tests_passed`` / ``tests_failed`` / ``tests_skipped`` (the tests get
dummy credentials, which the built app accepts, so secured operations are tested
too). Faults: ``qits.spec_invalid``, ``qits.api_build_failed``,
``qits.build_failed_tests`` (lists the failing tests).
"""

from __future__ import annotations

from typing import ClassVar

from agents.qits.base import QitsAgent, QitsPolicy, fault_from
from agents.qits.inputs import QitsInput
from agents.qits.serving import BUILT_API_CREDENTIALS, run_http_tests, serve_app
from agents.qits.test_generator import TESTS_ARTIFACT
from agents.runtime.agent import AgentFault, TaskOutcome
from buildkit.errors import BuildKitError
from qits.apibuild import build_api

__all__ = ["BUILD_FAILED_TESTS", "SRC_ARTIFACT", "ApiBuilderAgent", "ApiBuilderPolicy"]

#: The artifact this agent writes (a directory).
SRC_ARTIFACT = "src/"
BUILD_FAILED_TESTS = "qits.build_failed_tests"


class ApiBuilderPolicy(QitsPolicy):
    """Whether and how the api-builder checks its build against the generated tests."""

    #: Run the ``tests/`` input against the built app before answering.
    verify: bool = True
    test_timeout_s: float = 300


class ApiBuilderAgent(QitsAgent[ApiBuilderPolicy]):
    """Builds the API the run's OpenAPI document describes and checks it passes its tests."""

    manifest_file: ClassVar[str] = "api-builder"
    policy_model = ApiBuilderPolicy

    def run(self, inp: QitsInput, policy: ApiBuilderPolicy) -> TaskOutcome:
        """See the module docstring."""
        spec = self.spec_of(inp)
        out = self.output(inp, SRC_ARTIFACT)
        try:
            built = build_api(spec, out)
        except BuildKitError as exc:  # qits' SpecError, ApiBuildError: each has its code
            raise fault_from(exc, "qits.api_build_failed") from exc
        kinds = [op.kind for op in built.operations]
        metrics = {
            "operations_implemented": float(sum(k not in ("stub", "unsupported") for k in kinds)),
            "stubs": float(kinds.count("stub")),
            "unsupported": float(kinds.count("unsupported")),
        }
        if policy.verify and (inp.tests or TESTS_ARTIFACT in inp.artifacts):
            tests = inp.artifact(TESTS_ARTIFACT, self.store, inp.tests)
            with serve_app(out) as base_url:
                run = run_http_tests(
                    tests, base_url, timeout_s=policy.test_timeout_s, env=BUILT_API_CREDENTIALS
                )
            metrics["tests_passed"] = float(run.passed)
            metrics["tests_failed"] = float(run.failed)
            metrics["tests_skipped"] = float(run.skipped)
            if not run.ok:
                failing = "; ".join(run.failures[:10]) or run.output[-1500:]
                raise AgentFault(
                    BUILD_FAILED_TESTS,
                    f"the built API fails {run.failed} of {run.passed + run.failed} generated "
                    f"test(s) (pytest exit {run.exit_code}): {failing}",
                )
        return TaskOutcome(metrics=metrics, outputs={SRC_ARTIFACT: self.store.reference(out)})

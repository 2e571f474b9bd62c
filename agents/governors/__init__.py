"""Governors: agents that enforce the project's development policies on GitLab events.

* :class:`BranchPolicyAgent` (``branch-policy``): branch names, issue references, no
  direct pushes to protected branches.
* :class:`VersionSyncAgent` (``version-sync``): versions valid, in agreement, in the
  changelog and bumped as the conventional commits ask.
* :class:`TddEnforcerAgent` (``tdd-enforcer``): tests pass, coverage meets the
  threshold, tests come before the code.

Each takes a merge request or push event (or direct parameters, see
:class:`GovernorInput`), sets a ``bar/<agent>`` commit status and writes a note; a
broken rule fails the task with the governor's violation code. Policies are the
``policy:`` mapping of each manifest in ``agents/manifests``.
"""

from agents.governors.base import Governor, GovernorPolicy, GovernorPolicyError
from agents.governors.branch_policy import BranchPolicy, BranchPolicyAgent
from agents.governors.inputs import GovernorInput
from agents.governors.report import Check, Report
from agents.governors.tdd_enforcer import TddEnforcerAgent, TddPolicy
from agents.governors.version_sync import VersionSyncAgent, VersionSyncPolicy

__all__ = [
    "BranchPolicy",
    "BranchPolicyAgent",
    "Check",
    "Governor",
    "GovernorInput",
    "GovernorPolicy",
    "GovernorPolicyError",
    "Report",
    "TddEnforcerAgent",
    "TddPolicy",
    "VersionSyncAgent",
    "VersionSyncPolicy",
]

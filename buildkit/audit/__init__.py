"""The audit archive: every catalog topic kept in Postgres, append-only, hash-chained.

* :func:`run_archiver` — the consumer that archives (``buildkit audit archive``,
  ``python -m buildkit.audit``, a part of ``buildkit dev up``);
* :func:`verify_archive` — recomputes every chain (``buildkit audit verify``);
* :class:`ArchiveReplay` — ``buildkit replay --source archive``.

Imports are lazy: ``import buildkit.audit`` loads neither Kafka nor Postgres clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from buildkit.audit.archiver import ArchiveStats, run_archiver
    from buildkit.audit.replay import ArchiveReplay
    from buildkit.audit.verify import ChainProblem, VerifyResult, verify_archive

__all__ = [
    "ArchiveReplay",
    "ArchiveStats",
    "ChainProblem",
    "VerifyResult",
    "run_archiver",
    "verify_archive",
]

_WHERE = {
    "ArchiveReplay": "buildkit.audit.replay",
    "ArchiveStats": "buildkit.audit.archiver",
    "run_archiver": "buildkit.audit.archiver",
    "ChainProblem": "buildkit.audit.verify",
    "VerifyResult": "buildkit.audit.verify",
    "verify_archive": "buildkit.audit.verify",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

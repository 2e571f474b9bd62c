"""Where the QITS agents keep the artifacts a stage outputs, and how the next stage finds them.

A task's outputs are *references* (strings) that the workflow engine copies into the
``inputs`` of the stages downstream (``task.inputs["openapi-spec.yaml"]``). The
agents write an artifact through an :class:`ArtifactStore` and pass on the reference
it gives; the reader hands the reference back to the store to get a local path.

One implementation ships: :class:`LocalArtifactStore`, a directory tree
``<BAR_DATA_DIR>/artifacts/<run_id>/<stage>/<name>`` whose references are absolute
``file://`` URIs. In development every agent replica runs on one machine and shares
that filesystem, so a reference written by the test-generator opens in the
api-builder. A production deployment, with replicas on different hosts, swaps in a
store over shared storage (an object store, a persistent volume) behind the same
:class:`ArtifactStore` protocol; the agents do not change.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from buildkit.errors import BuildKitError

__all__ = ["ArtifactError", "ArtifactStore", "LocalArtifactStore"]

# Characters kept from run ids and stage names in directory names.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ArtifactError(BuildKitError):
    """A reference that does not name a readable artifact."""


class ArtifactStore(Protocol):
    """Where artifacts are written and how references become local paths again."""

    def location(self, run_id: str, stage: str, name: str) -> Path:
        """A fresh local path to write artifact ``name`` of ``stage`` in ``run_id`` to
        (a directory for names ending in ``/``); anything already there is removed."""
        ...

    def reference(self, path: Path) -> str:
        """The reference to put in a task's outputs for an artifact written at ``path``."""
        ...

    def resolve(self, reference: str) -> Path:
        """The local path of the artifact ``reference`` names; :class:`ArtifactError`
        when there is none."""
        ...


class LocalArtifactStore:
    """Artifacts as files under ``root`` (``<BAR_DATA_DIR>/artifacts``), named by
    ``file://`` URIs; see the module docstring for when this is enough."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    def location(self, run_id: str, stage: str, name: str) -> Path:
        """``<root>/<run_id>/<stage>/<name>``, emptied (a run's retry rewrites it)."""
        parts = [p for p in name.strip("/").split("/") if p not in ("", ".", "..")]
        if not parts:
            raise ArtifactError(f'artifact name "{name}" names no file')
        path = self.root / _safe(run_id) / _safe(stage) / Path(*parts)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        if name.endswith("/"):
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def reference(self, path: Path) -> str:
        """The absolute ``file://`` URI of ``path``."""
        return path.absolute().as_uri()

    def resolve(self, reference: str) -> Path:
        """The path of a ``file://`` URI or of an absolute path, if it exists."""
        parsed = urlsplit(reference)
        if parsed.scheme == "file":
            path = Path(unquote(parsed.path))
        elif parsed.scheme == "" and reference.startswith("/"):
            path = Path(reference)
        else:
            raise ArtifactError(
                f'artifact reference "{reference}" is not a file:// URI or an absolute path — '
                "this deployment's artifact store is the local one (LocalArtifactStore)"
            )
        if not path.exists():
            raise ArtifactError(
                f'artifact "{reference}" does not exist on this host — in development all '
                "agent replicas must share BAR_DATA_DIR"
            )
        return path


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "_"

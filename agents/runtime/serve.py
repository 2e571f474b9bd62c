"""One agent replica as an OS process::

    python -m agents.runtime.serve --manifest agents/coverage.yaml \\
        [--entrypoint my_agents.coverage:CoverageAgent] [--name NAME] \\
        [--replica-id ID] [--heartbeat-interval S] [--group GROUP]

Loads the :class:`~agents.runtime.agent.Agent` subclass named by ``--entrypoint``
(or by the manifest's ``entrypoint``; the flag wins) and runs it with an
:class:`~agents.runtime.runner.AgentRunner`, connected through the ``BAR_*``
environment (:class:`~buildkit.settings.Settings`). The manifest's directory goes
first on ``sys.path``, so an agent module next to its manifest imports. Without
``--manifest`` the class's own ``manifest`` attribute is used. ``--name`` renames
the agent, and with it its task topic ``bar.tasks.<name>`` and default group
``bar-agent-<name>``.

SIGTERM or SIGINT stops it cleanly: the task in flight finishes and is answered,
then a DRAINING heartbeat and an inactive registration are sent and it exits 0; a
second signal interrupts at once. Logs go to stderr.

Exit status: 0 after a clean stop; 2 when the command line, the manifest, the
entry point or the settings are wrong (the problem on stderr, no traceback); 1
when the runner fails (the error on stderr, with a traceback unless it is one of
the project's own errors, which say what to do).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from agents.runtime.agent import Agent
from agents.runtime.manifest import AgentManifest, ManifestError, load_manifest
from buildkit.errors import BuildKitError, ConfigError

__all__ = ["EntrypointError", "load_agent", "load_agent_class", "main", "rename_manifest"]

log = logging.getLogger("agents.runtime.serve")


class EntrypointError(ConfigError):
    """The agent to serve cannot be found, imported or created."""


def rename_manifest(manifest: AgentManifest, name: str) -> AgentManifest:
    """``manifest`` under another agent name (validated like the manifest's own)."""
    try:
        return AgentManifest.model_validate({**manifest.model_dump(), "name": name})
    except ValidationError as exc:
        reason = exc.errors()[0].get("ctx", {}).get("error") or exc.errors()[0]["msg"]
        raise ConfigError(f"--name: {reason}") from exc


def load_agent_class(entrypoint: str) -> type[Agent]:
    """Import ``module.path:ClassName`` and check it is an :class:`Agent` subclass."""
    module_name, sep, class_name = entrypoint.partition(":")
    if not sep or not module_name or not class_name:
        raise EntrypointError(
            f'entry point "{entrypoint}" is not of the form "module.path:ClassName", '
            'e.g. "my_agents.coverage:CoverageAgent"'
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module of the entry point itself is the user's typo; a missing
        # import inside it is a bug (or missing dependency) in that module: re-raise.
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise
        raise EntrypointError(
            f'entry point "{entrypoint}": no module named "{exc.name}" — check the '
            "spelling, or put the module next to the manifest or on PYTHONPATH"
        ) from exc
    found = getattr(module, class_name, None)
    if found is None:
        names = sorted(
            n
            for n, v in vars(module).items()
            if isinstance(v, type)
            and issubclass(v, Agent)
            and v is not Agent
            and not n.startswith("_")
        )
        hint = f" (Agent subclasses there: {', '.join(names)})" if names else ""
        raise EntrypointError(
            f'entry point "{entrypoint}": module "{module_name}" has no "{class_name}"{hint}'
        )
    if not (isinstance(found, type) and issubclass(found, Agent)):
        raise EntrypointError(
            f'entry point "{entrypoint}" is a {type(found).__name__}, not a subclass of '
            "agents.runtime.agent.Agent"
        )
    return found


def load_agent(
    manifest_path: str | os.PathLike[str] | None,
    entrypoint: str | None = None,
    name: str | None = None,
) -> Agent:
    """The agent a ``serve`` command line describes (see the module docstring).

    Raises :class:`~agents.runtime.manifest.ManifestError` for a bad manifest and
    :class:`EntrypointError` when no entry point is given or it does not load.
    """
    manifest: AgentManifest | None = None
    if manifest_path is not None:
        manifest = load_manifest(manifest_path)
        folder = str(Path(manifest_path).resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
    entrypoint = entrypoint or (manifest.entrypoint if manifest is not None else None)
    if not entrypoint:
        where = f"set entrypoint in {manifest_path}" if manifest_path else "pass --manifest"
        raise EntrypointError(
            f'no agent to run: pass --entrypoint "module.path:ClassName" or {where}'
        )
    cls = load_agent_class(entrypoint)
    if manifest is None:
        manifest = getattr(cls, "manifest", None)
        if not isinstance(manifest, AgentManifest):
            raise EntrypointError(
                f"{entrypoint} has no manifest: pass --manifest PATH or set the class "
                "attribute `manifest = load_manifest(...)`"
            )
    if name:
        manifest = rename_manifest(manifest, name)
    try:
        takes_manifest = "manifest" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes_manifest = False
    if takes_manifest:
        return cls(manifest=manifest)
    agent = cls()
    agent.manifest = manifest
    return agent


def _parser() -> argparse.ArgumentParser:
    def positive(text: str) -> float:
        value = float(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parser = argparse.ArgumentParser(
        prog="python -m agents.runtime.serve",
        description="Serve one agent replica: its tasks from Kafka, its results back.",
    )
    parser.add_argument("--manifest", help="the agent's manifest YAML file")
    parser.add_argument(
        "--entrypoint",
        help='the Agent subclass, "module.path:ClassName" (overrides the manifest\'s)',
    )
    parser.add_argument("--name", help="serve the agent under this name (its task topic too)")
    parser.add_argument(
        "--replica-id",
        help="this replica's id (default: $BAR_REPLICA_ID — the pod name on Kubernetes — "
        "else <hostname>-<pid>)",
    )
    parser.add_argument(
        "--heartbeat-interval", type=positive, default=5.0, help="seconds between heartbeats"
    )
    parser.add_argument("--group", help="consumer group (default: bar-agent-<name>)")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="logging level (default: INFO)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv``; return the exit status."""
    args = _parser().parse_args(argv)
    replica_id = (
        args.replica_id
        or os.environ.get("BAR_REPLICA_ID")
        or f"{socket.gethostname()}-{os.getpid()}"
    )
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format=f"%(asctime)s {replica_id} %(levelname)s %(name)s: %(message)s",
    )
    # HTTP clients (the schema registry's) log every request at INFO.
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))
    from agents.runtime.runner import AgentRunner
    from buildkit.settings import Settings

    try:
        agent = load_agent(args.manifest, args.entrypoint, args.name)
        settings = Settings()
    except (ManifestError, ConfigError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now")
        log.info("%s: finishing the task in flight, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner = AgentRunner(
        settings,
        agent,
        group_id=args.group,
        replica_id=replica_id,
        heartbeat_interval_s=args.heartbeat_interval,
    )
    log.info(
        "serving %s (%s) from %s in group %s",
        agent.name,
        type(agent).__qualname__,
        runner.topic,
        runner.group_id,
    )
    try:
        stats = runner.run(stop=stop)
    except KeyboardInterrupt as exc:
        print(f"error: interrupted: {exc}", file=sys.stderr)
        return 130
    except BuildKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        log.exception("the runner failed")
        return 1
    log.info(
        "stopped: %d task(s) run, %d duplicate(s) skipped, %d other record(s) ignored",
        stats.executed,
        stats.duplicates,
        stats.ignored,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

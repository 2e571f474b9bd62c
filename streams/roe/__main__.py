"""``python -m streams.roe``: run the ROE worker until SIGTERM/SIGINT.

Options: ``--workflow FILE`` (repeatable) adds workflows whose triggers it watches
(the built-in ones are always there); ``--until-idle S`` stops after S seconds with
no input and no active run (for scripts and tests).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from buildkit.errors import BuildKitError
from buildkit.settings import Settings
from streams.roe.engine import RoeEngine
from streams.roe.spec import builtin_workflows, load_workflow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.roe", description=__doc__)
    parser.add_argument("--workflow", action="append", default=[], type=Path)
    parser.add_argument("--until-idle", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        workflows = [load_workflow(p) for p in [*builtin_workflows(), *args.workflow]]
        engine = RoeEngine(Settings(), workflows=workflows)
        try:
            stats = engine.run(stop, until_idle_s=args.until_idle)
        finally:
            engine.close()
    except BuildKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    logging.getLogger("streams.roe").info(
        "stopped: %d inputs, %d events, %d tasks", stats.inputs, stats.events, stats.tasks
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

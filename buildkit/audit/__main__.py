"""``python -m buildkit.audit``: the archiver as a service, settings from ``BAR_*``.

Runs until SIGTERM or SIGINT, then finishes the batch in hand (archived and
committed, or neither), leaves the group and exits 0. Writes a heartbeat under
``BAR_DATA_DIR/run/`` that ``buildkit dev status`` checks. A problem a user can
fix (Postgres or Kafka unreachable) is one line on stderr and a non-zero exit.

``--topic`` (repeatable) archives those topics instead of the catalog's, and
``--group`` names another consumer group: for one-off archives and tests.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from pydantic import ValidationError

from buildkit.errors import BuildKitError
from buildkit.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Run the archiver until told to stop; the process exit code."""
    from buildkit.audit.archiver import GROUP

    parser = argparse.ArgumentParser(
        prog="python -m buildkit.audit", description="Archive Kafka topics into Postgres."
    )
    parser.add_argument("--group", default=GROUP, help=f"consumer group (default {GROUP})")
    parser.add_argument("--topic", action="append", help="archive this topic (repeatable)")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"BAR_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        print(f"audit archiver: invalid settings: {problems}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    from buildkit.audit.archiver import run_archiver
    from buildkit.audit.heartbeat import heartbeat_path
    from buildkit.catalog import Catalog, TopicSpec, default_catalog

    catalog = default_catalog()
    if args.topic:
        catalog = Catalog(catalog.find(t) or TopicSpec(t, None) for t in dict.fromkeys(args.topic))
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logging.getLogger("buildkit.audit").info(
            "%s: finishing the current batch, then stopping", signal.Signals(signum).name
        )
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        run_archiver(settings, catalog, stop, group=args.group, heartbeat=heartbeat_path(settings))
    except BuildKitError as exc:
        print(f"audit archiver: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

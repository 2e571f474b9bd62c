"""``python -m streams.swarm``: the SWARM controller service (see :mod:`.service`)."""

from __future__ import annotations

import argparse
import logging
import sys

from buildkit.errors import BuildKitError
from buildkit.settings import Settings
from streams.swarm.controller import HealthSettings
from streams.swarm.service import make_backend, run_service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.swarm", description=__doc__)
    parser.add_argument("--backend", default="local", choices=["local", "kubernetes"])
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between passes")
    parser.add_argument("--health-interval", type=float, default=10.0)
    parser.add_argument("--failure-threshold", type=int, default=3)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--kube-url", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = Settings()
        backend = make_backend(
            settings,
            args.backend,
            heartbeat_interval_s=min(2.0, args.health_interval / 2),
            namespace=args.namespace,
            kube_url=args.kube_url,
        )
        run_service(
            settings,
            backend,
            interval_s=args.interval,
            health=HealthSettings(args.health_interval, args.failure_threshold),
        )
    except BuildKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

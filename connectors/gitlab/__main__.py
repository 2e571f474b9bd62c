"""``python -m connectors.gitlab``: the GitLab webhook as the dev stack runs it.

Settings from ``BAR_*``; listens on ``BAR_GITLAB_WEBHOOK_HOST:BAR_GITLAB_WEBHOOK_PORT``.
With no webhook secret configured it uses the dev secret, generated once in
``<BAR_DATA_DIR>/run/gitlab-webhook.secret`` (``--no-dev-secret`` refuses to start
instead, as ``buildkit connect gitlab`` does). SIGTERM or Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import sys

from buildkit.errors import BuildKitError
from buildkit.settings import Settings
from connectors.gitlab.server import resolve_tokens, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connectors.gitlab", description=__doc__)
    parser.add_argument("--host", default=None, help="default: BAR_GITLAB_WEBHOOK_HOST")
    parser.add_argument("--port", type=int, default=None, help="default: BAR_GITLAB_WEBHOOK_PORT")
    parser.add_argument("--no-dev-secret", action="store_true", help="no secret: refuse to start")
    parser.add_argument("--no-access-log", action="store_true", help="no line per request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = Settings()
        tokens = resolve_tokens(settings, use_dev_secret=not args.no_dev_secret)
        serve(
            settings,
            tokens,
            host=args.host,
            port=args.port,
            access_log=not args.no_access_log,
            on_listening=lambda url: print(f"GitLab webhook listening on {url}", flush=True),
        )
    except BuildKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

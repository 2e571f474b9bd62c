"""The GitLab connector: webhook deliveries in, as :class:`~buildkit.contracts.GitLabEvent`."""

from connectors.gitlab.normalize import HEADER_KINDS, normalize, parse_gitlab_time

__all__ = ["HEADER_KINDS", "normalize", "parse_gitlab_time"]

"""The GitLab actions as recorded: each action on ``bar.gitlab.actions`` with its outcome.

Read straight from the log, so it works with or without GitLab configured and with or
without a sink running: an action with no outcome on ``bar.gitlab.action-outcomes``
is *pending*. Both topics are read from their beginning to their end with
:class:`buildkit.replay.BrokerReplay`, which stops at the partition-EOF events of the
fetches rather than at the ListOffsets high watermark (a lower bound on the embedded
broker). An action id recorded twice (a redelivered task) is one row, the first
record's; its status is its latest outcome's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from buildkit.catalog import Catalog, default_catalog
from buildkit.contracts.base import Event
from buildkit.contracts.events import ActionStatus, GitLabAction, GitLabActionOutcome
from buildkit.replay import OPEN, BrokerReplay
from buildkit.serde import SerdeRegistry
from buildkit.settings import Settings

__all__ = ["ACTIONS_TOPIC", "OUTCOMES_TOPIC", "ActionRow", "ViewStatus", "list_actions"]

log = logging.getLogger(__name__)

#: Where agents ask for GitLab actions, and where the sink records their outcomes (the
#: one definition; :mod:`connectors.gitlab.sink` uses these).
ACTIONS_TOPIC = "bar.gitlab.actions"
OUTCOMES_TOPIC = "bar.gitlab.action-outcomes"


class ViewStatus(StrEnum):
    """Where an action stands, as ``buildkit gitlab actions`` shows it."""

    PENDING = "pending"
    DONE = "done"
    ALREADY_DONE = "already-done"
    FAILED = "failed"


_FROM_OUTCOME = {
    ActionStatus.DONE: ViewStatus.DONE,
    ActionStatus.ALREADY_DONE: ViewStatus.ALREADY_DONE,
    ActionStatus.FAILED: ViewStatus.FAILED,
}


@dataclass(frozen=True)
class ActionRow:
    """One action, when it was recorded, and its latest outcome (None: pending)."""

    action: GitLabAction
    recorded_at: datetime
    outcome: GitLabActionOutcome | None = None
    #: Outcomes recorded for this action id (more than one after a redelivery).
    outcomes: int = 0

    @property
    def status(self) -> ViewStatus:
        """pending, done, already-done or failed."""
        return ViewStatus.PENDING if self.outcome is None else _FROM_OUTCOME[self.outcome.status]

    def as_json(self) -> dict[str, Any]:
        """A flat JSON-ready form for ``--json``."""
        outcome = self.outcome
        return {
            "action_id": self.action.action_id,
            "kind": self.action.kind.value,
            "project_id": self.action.project_id,
            "target_iid": self.action.target_iid,
            "sha": self.action.sha,
            "title": self.action.title,
            "labels": list(self.action.labels),
            "run_id": self.action.run_id,
            "requested_by": self.action.requested_by,
            "recorded_at": self.recorded_at.isoformat(),
            "status": self.status.value,
            "http_status": outcome.http_status if outcome else None,
            "reason": outcome.reason if outcome else None,
            "reference": outcome.reference if outcome else None,
            "attempts": outcome.attempts if outcome else 0,
            "finished_at": outcome.finished_at.isoformat() if outcome else None,
        }


def _read(settings: Settings, catalog: Catalog, topic: str) -> Iterator[tuple[datetime, Event]]:
    serde = SerdeRegistry(settings, catalog).for_topic(topic)
    replay = BrokerReplay(settings, topic, OPEN, OPEN, idle_timeout_s=10)
    try:
        for record in replay.records():
            if record.value is None:
                continue
            try:
                event = serde.decode(record.value)
            except Exception as exc:  # `buildkit consume` shows such records raw
                log.debug("%s offset %s: not decodable: %s", topic, record.offset, exc)
                continue
            yield datetime.fromtimestamp(record.timestamp_ms / 1000, UTC), event
    finally:
        replay.close()


def list_actions(
    settings: Settings,
    *,
    run_id: str | None = None,
    project_id: int | None = None,
    status: ViewStatus | None = None,
    catalog: Catalog | None = None,
    actions_topic: str = ACTIONS_TOPIC,
    outcomes_topic: str = OUTCOMES_TOPIC,
) -> list[ActionRow]:
    """Every recorded action matching the filters, oldest first, with its outcome."""
    catalog = catalog or default_catalog()
    rows: dict[str, ActionRow] = {}
    for at, event in _read(settings, catalog, actions_topic):
        if not isinstance(event, GitLabAction) or event.action_id in rows:
            continue
        if run_id is not None and event.run_id != run_id:
            continue
        if project_id is not None and event.project_id != project_id:
            continue
        rows[event.action_id] = ActionRow(event, at)
    if rows:
        for _, event in _read(settings, catalog, outcomes_topic):
            if not isinstance(event, GitLabActionOutcome):
                continue
            row = rows.get(event.action_id)
            if row is not None:
                rows[event.action_id] = ActionRow(
                    row.action, row.recorded_at, event, row.outcomes + 1
                )
    found = list(rows.values())
    if status is not None:
        found = [r for r in found if r.status == status]
    return found

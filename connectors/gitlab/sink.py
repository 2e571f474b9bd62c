"""The GitLab sink: executes the actions on ``bar.gitlab.actions`` and records each outcome.

Agents never call GitLab themselves; they publish :class:`GitLabAction` events (an
outbox) and this consumer group, ``bar-gitlab-sink``, carries them out with
python-gitlab (:mod:`connectors.gitlab.client`), publishing one
:class:`GitLabActionOutcome` per action on ``bar.gitlab.action-outcomes``. Run it with
``python -m connectors.gitlab.sink`` or ``buildkit gitlab sink``; SIGTERM or Ctrl-C
stops it cleanly.

Guarantees and policy:

* **At-least-once.** Offsets are committed after the batch's outcomes were
  acknowledged by the broker (``before_commit`` flushes the producer), so a crash
  re-delivers actions, never skips one.
* **No second comment.** A note carries an invisible ``<!-- bar-action:ID -->``
  marker; a redelivered note action finds it among the target's newest notes and
  ends ``ALREADY_DONE`` with the existing note's id. Labels, commit statuses and wiki
  pages are idempotent by themselves (a commit status already in the wanted state,
  a wiki page already holding the content, are ``ALREADY_DONE`` as well).
* **Transient trouble is waited out, never dropped.** python-gitlab retries each
  request on 429 (sleeping ``Retry-After``, or ``RateLimit-Reset``) and on 5xx or a
  lost connection (exponential backoff from 0.1 s), ``max_retries`` times. When it
  gives up, the sink keeps the action and tries it again after its own backoff
  (``outage_backoff_s`` doubling up to ``outage_backoff_max_s``) for as long as the
  outage lasts: nothing later on the partition is executed ahead of it, and
  nothing is committed past it. (A wait longer than ``max.poll.interval.ms``, 5 min by
  default, costs the member its partitions; the commit is then voided and the batch
  redelivered to whoever owns them: at-least-once still holds.) A stop during the
  wait leaves the batch uncommitted; the next run starts again at the waiting action.
  A note's ``POST`` is the exception to python-gitlab's 5xx retries: a gateway may
  answer 502 after GitLab made the note, so the sink's retry (marker scan first)
  is the only one. The same holds for a wiki page's create ``POST``.
* **Refusals fail fast.** 401, 403, 404 and every other 4xx but 408/429 (and an action missing
  a field its kind needs) end the action with a ``FAILED`` outcome carrying the HTTP
  status and GitLab's message; the sink moves on to the next action. So do answers no
  retry mends: a redirect, a 2xx that is not JSON (a login page), a malformed URL.
* **Unconfigured or misconfigured: refuse to start.** Without ``BAR_GITLAB_URL`` and
  ``BAR_GITLAB_TOKEN`` the sink exits with a message naming them; the actions stay
  on the topic, listed by ``buildkit gitlab actions``. At start-up it asks GitLab's
  ``/api/v4/version`` and ``/api/v4/user``: a URL that is not GitLab's API (404, a
  redirect, a login page) or a token GitLab refuses (401) stops it with a message
  saying which setting to fix; GitLab unreachable is only logged (waited out later).

A record that is not a decodable :class:`GitLabAction`, or whose handling raises
anything else (a bug, the outcome topic gone), goes to ``bar.dlq.bar-gitlab-sink``
after the consumer's attempts, as for every consumer.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from buildkit.catalog import Catalog
from buildkit.consumer import ConsumedRecord, TypedConsumer
from buildkit.contracts.events import ActionStatus, GitLabAction, GitLabActionOutcome
from buildkit.producer import TypedProducer
from buildkit.settings import Settings
from connectors.gitlab.actions_view import ACTIONS_TOPIC, OUTCOMES_TOPIC
from connectors.gitlab.client import ActionRejected, GitLabActions, GitLabUnavailable

__all__ = [
    "ACTIONS_TOPIC",
    "GROUP_ID",
    "OUTCOMES_TOPIC",
    "GitLabSink",
    "SinkStats",
    "main",
    "run_sink",
]

log = logging.getLogger(__name__)

GROUP_ID = "bar-gitlab-sink"


class _Stopping(BaseException):
    """Raised out of a handler waiting out an outage when the sink is asked to stop.

    A BaseException, so the consumer neither retries nor dead-letters it: it leaves
    the run loop with the batch uncommitted, and the waiting action is redelivered.
    """


@dataclass
class SinkStats:
    """What a sink run did, by outcome."""

    done: int = 0
    already_done: int = 0
    failed: int = 0
    #: Times the sink waited out GitLab being unavailable (after python-gitlab's retries).
    outage_waits: int = 0
    by_action: dict[str, ActionStatus] = field(default_factory=dict)


class GitLabSink:
    """The consumer group that executes GitLab actions and publishes their outcomes."""

    def __init__(
        self,
        settings: Settings,
        actions: GitLabActions,
        *,
        group_id: str = GROUP_ID,
        actions_topic: str = ACTIONS_TOPIC,
        outcomes_topic: str = OUTCOMES_TOPIC,
        catalog: Catalog | None = None,
        outage_backoff_s: float = 1.0,
        outage_backoff_max_s: float = 60.0,
        **kafka_overrides: Any,
    ) -> None:
        self.settings = settings
        self.actions = actions
        self.outcomes_topic = outcomes_topic
        self.outage_backoff_s = outage_backoff_s
        self.outage_backoff_max_s = outage_backoff_max_s
        self.stats = SinkStats()
        self._stop = threading.Event()
        self._producer = TypedProducer(settings, catalog=catalog, source=group_id)
        self._producer.check_topics([outcomes_topic])
        self._consumer = TypedConsumer(
            settings, group_id, [actions_topic], catalog=catalog, **kafka_overrides
        )

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        idle_timeout_s: float | None = None,
        max_records: int | None = None,
    ) -> SinkStats:
        """Execute actions until ``stop`` is set (or ``idle_timeout_s`` passes with none,
        or ``max_records`` were handled)."""
        if stop is not None:
            self._stop = stop
        try:
            self._consumer.run(
                self._handle,
                stop=self._stop,
                idle_timeout_s=idle_timeout_s,
                max_records=max_records,
                batch_size=50,
                # Commit at least every second of work: a stop or crash redoes little.
                batch_budget_s=1.0,
                before_commit=self._producer.flush,
            )
        except _Stopping:
            log.info("stopped while waiting for GitLab; the waiting action is redelivered")
        return self.stats

    def _handle(self, record: ConsumedRecord) -> None:
        action = record.value
        if not isinstance(action, GitLabAction):
            raise TypeError(f"{record.topic} carries {type(action).__name__}, not GitLabAction")
        outcome = self._execute(action)
        envelope = record.envelope
        self._producer.produce(
            self.outcomes_topic,
            outcome,
            key=str(action.project_id),
            correlation_id=envelope.correlation_id,
            traceparent=envelope.traceparent,
        )
        self.stats.by_action[action.action_id] = outcome.status
        if outcome.status == ActionStatus.DONE:
            self.stats.done += 1
        elif outcome.status == ActionStatus.ALREADY_DONE:
            self.stats.already_done += 1
        else:
            self.stats.failed += 1

    def _execute(self, action: GitLabAction) -> GitLabActionOutcome:
        """Run one action to an outcome, waiting out outages (see the module docstring)."""
        # Tries of the action's requests: one per pass, plus python-gitlab's retries.
        attempts = 0
        backoff = self.outage_backoff_s
        while True:
            attempts += 1
            try:
                done = self.actions.execute(action)
            except ActionRejected as exc:
                attempts += self.actions.last_retried
                log.warning("action %s failed: %s", action.action_id, exc.reason)
                return _outcome(action, ActionStatus.FAILED, attempts, exc.http_status, exc.reason)
            except GitLabUnavailable as exc:
                attempts += self.actions.last_retried
                self.stats.outage_waits += 1
                log.warning("action %s: %s; trying again in %.1f s", action.action_id, exc, backoff)
                if self._stop.wait(backoff):
                    raise _Stopping from exc
                backoff = min(backoff * 2, self.outage_backoff_max_s)
                continue
            return _outcome(
                action,
                done.status,
                attempts + done.retried,
                done.http_status,
                None,
                done.reference,
            )

    def stop(self) -> None:
        """Ask a running :meth:`run` to return (from another thread or a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        """Flush the outcomes and leave the group."""
        try:
            self._producer.flush()
        finally:
            self._consumer.close()
            self.actions.close()

    def __enter__(self) -> GitLabSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _outcome(
    action: GitLabAction,
    status: ActionStatus,
    attempts: int,
    http_status: int | None,
    reason: str | None,
    reference: str | None = None,
) -> GitLabActionOutcome:
    return GitLabActionOutcome(
        action_id=action.action_id,
        kind=action.kind,
        project_id=action.project_id,
        status=status,
        attempts=attempts,
        http_status=http_status,
        reason=reason,
        reference=reference,
        finished_at=datetime.now(UTC),
    )


def run_sink(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    max_retries: int = 5,
    **sink_options: Any,
) -> SinkStats:
    """Run the sink in the foreground until ``stop``, SIGTERM or Ctrl-C; a stop lets the
    action in hand finish (or leaves it uncommitted, when waiting out an outage).

    ``sink_options`` go to :class:`GitLabSink` (group, topics, backoff). Raises
    :class:`~buildkit.errors.ConfigError` naming ``BAR_GITLAB_URL`` /
    ``BAR_GITLAB_TOKEN`` when GitLab is not configured, and naming the one to fix when
    GitLab refuses the URL or the token (:meth:`GitLabActions.check`), before touching
    Kafka.
    """
    actions = GitLabActions.from_settings(settings, max_retries=max_retries)
    try:
        version = actions.check()
    except GitLabUnavailable as exc:
        log.warning("GitLab not reachable at start-up (%s); actions wait for it", exc)
    except BaseException:
        actions.close()
        raise
    else:
        log.info("GitLab %s at %s, token accepted", version, actions.url)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    try:
        sink = GitLabSink(settings, actions, **sink_options)
    except BaseException:
        actions.close()
        raise
    with sink:
        log.info("GitLab sink running against %s; Ctrl-C stops it", actions.url)
        return sink.run(stop=stop)


def main() -> None:
    """``python -m connectors.gitlab.sink``: the sink with settings from ``BAR_*``."""
    import sys

    from buildkit.cli.common import load_settings
    from buildkit.errors import BuildKitError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        stats = run_sink(load_settings())
    except BuildKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    # The last line a supervisor (or a test) reads: the sink stopped cleanly.
    log.info(
        "GitLab sink stopped: %d done, %d already done, %d failed",
        stats.done,
        stats.already_done,
        stats.failed,
    )


if __name__ == "__main__":
    main()

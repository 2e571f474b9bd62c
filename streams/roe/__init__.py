"""ROE, the Runtime Orchestration Engine: YAML workflows of agent stages run as an
event-sourced state machine on Kafka.

* :mod:`streams.roe.model` — the workflow spec as typed data;
* :mod:`streams.roe.spec` — loading and validating workflow YAML (file:line:column errors);
* :mod:`streams.roe.conditions` — the quality-gate condition grammar (no ``eval``);
* :mod:`streams.roe.state` — a run's state and the fold of its events;
* :mod:`streams.roe.decider` — the pure ``(state, command) -> events`` logic;
* :mod:`streams.roe.triggers` — GitLab event, cron and manual triggers.
"""

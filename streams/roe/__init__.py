"""ROE, the Runtime Orchestration Engine: YAML workflows of agent stages run as an
event-sourced state machine on Kafka.

* :mod:`streams.roe.model` — the workflow spec as typed data;
* :mod:`streams.roe.spec` — loading and validating workflow YAML (file:line:column errors);
* :mod:`streams.roe.conditions` — the quality-gate condition grammar (no ``eval``);
* :mod:`streams.roe.decider` — the pure ``(state, command) -> events`` logic and the fold.
"""

"""Stream processors on the event backbone: ``roe/`` (the workflow engine),
``vortex/`` (Faust transforms and fan-out), ``swarm/`` (the autoscaler).
They import :mod:`buildkit`; :mod:`buildkit` never imports them."""

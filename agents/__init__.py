"""Agents: the SDK (``runtime/``) and the built-in agents by role (governors, workers,
critics, observers), plus ``qits/`` quality tooling. They import :mod:`buildkit` only."""

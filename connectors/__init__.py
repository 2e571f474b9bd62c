"""Edges to the outside world (``gitlab/``, ``pgvector/``, ``websocket/``, ``otel/``).
Each imports :mod:`buildkit`; connectors never import each other."""

"""QITS, the quality tooling the agents use: tests generated from OpenAPI specs,
mutation testing, security scanning, coverage and the quality gate.

Each capability is a module of its own; this package imports none of them, so
``import qits`` stays cheap.
"""

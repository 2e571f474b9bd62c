"""Tests for the connectors."""

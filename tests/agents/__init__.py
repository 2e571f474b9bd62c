"""Tests of the agent SDK and the built-in agents."""

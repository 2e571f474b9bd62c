"""Tests of the governors, each on small real git repositories the tests build."""

"""Tests for the GitLab connector."""

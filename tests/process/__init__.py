"""Tests that run the service or the CLI as a process."""

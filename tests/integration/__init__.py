"""Tests on a real nats-server started in process."""

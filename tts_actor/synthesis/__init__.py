"""The synthesis use case: route -> profile -> cache -> segments -> job -> sinks. No NATS types."""
